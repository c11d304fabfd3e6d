"""What the console shares across requests: sessions, its two HTTP clients, its templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.query.console.sessions import ConsoleSession, SessionStore

TEMPLATES = Path(__file__).parent / "templates"
SOURCE_ASSETS = Path(__file__).resolve().parents[3] / "libs" / "console" / "dist"


def template_environment() -> Environment:
    """Autoescaping everywhere: every string a person or a model wrote is rendered as text."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["percent"] = _percent
    environment.filters["number"] = _number
    environment.filters["moment"] = _moment
    return environment


def _percent(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value) * 100:.{digits}f}%"


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _moment(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text.replace("T", " ")[:19] + " UTC" if text else "-"


class UpstreamProblem(Exception):
    """A read or an action the console forwarded was refused: the status and its detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class ConsoleState:
    sessions: SessionStore
    query: httpx.AsyncClient  # this service's own API, in process
    ingest: httpx.AsyncClient  # the ingest service, over HTTP like any client
    templates: Environment
    assets: Path

    async def read(
        self, session: ConsoleSession, path: str, params: dict[str, Any] | None = None
    ) -> Any:
        """GET one of the query API's routes as the session's key: the console sees exactly
        what the API shows that key, tenant isolation included."""
        answer = await self.query.get(
            path, params={k: v for k, v in (params or {}).items() if v not in (None, "")},
            headers={"Authorization": f"Bearer {session.api_key}"},
        )
        return _json_or_raise(answer)

    async def publish(self, session: ConsoleSession, path: str, body: dict[str, Any]) -> Any:
        """POST an event to ingest as the session's key."""
        try:
            answer = await self.ingest.post(
                path, json=body, headers={"Authorization": f"Bearer {session.api_key}"}
            )
        except httpx.HTTPError as error:
            raise UpstreamProblem(
                503, f"ingest could not be reached ({type(error).__name__})"
            ) from None
        return _json_or_raise(answer)


def _json_or_raise(answer: httpx.Response) -> Any:
    if answer.status_code >= 400:
        try:
            detail = str(answer.json().get("detail") or answer.reason_phrase)
        except ValueError:
            detail = answer.reason_phrase
        raise UpstreamProblem(answer.status_code, detail)
    return answer.json()
