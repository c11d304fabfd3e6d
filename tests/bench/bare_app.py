"""The baseline for the single-event benchmark: FastAPI validating the same request model and
doing nothing else (no auth, no broker), served the same way as ingest; and the rank API's
request model and ranking maths alone."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from fastapi import FastAPI

from feedbackloop.contract.requests import FeedbackRequest
from services.ingest.ranking import RankRequest
from services.learner.ranking import Candidate, rank_candidates, weights_for

app = FastAPI()


@app.post("/v1/feedback", status_code=202)
async def submit_feedback(body: FeedbackRequest) -> dict[str, str]:
    return {"event_id": str(body.event_id or uuid4()), "status": "accepted"}


@app.post("/v1/recommendations/rank")
async def rank(body: RankRequest) -> dict[str, Any]:
    """The same request model and ranking maths with equal weights: no auth, no reads, no log."""
    candidates = [Candidate(c.item_id, c.scores, c.category) for c in body.candidates]
    ranked = rank_candidates(candidates, weights_for(None, candidates))
    return {"session_id": body.session_id or uuid4().hex,
            "ranked": [r.__dict__ for r in ranked]}
