"""The baseline for the single-event benchmark: FastAPI validating the same request model and
doing nothing else (no auth, no broker), served the same way as ingest."""

from __future__ import annotations

from uuid import uuid4

from fastapi import FastAPI

from feedbackloop.contract.requests import FeedbackRequest

app = FastAPI()


@app.post("/v1/feedback", status_code=202)
async def submit_feedback(body: FeedbackRequest) -> dict[str, str]:
    return {"event_id": str(body.event_id or uuid4()), "status": "accepted"}
