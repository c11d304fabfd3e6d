"""Running an ASGI service with uvicorn: the one way every service process starts."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


def serve(app_factory: Callable[[], FastAPI], *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn stops accepting, drains requests, then runs the
    app's lifespan shutdown (consumers finish and commit their batch first)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        app_factory,
        factory=True,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=15,
    )
