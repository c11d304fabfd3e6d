"""RFC 9457 problem details for every error response."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid event",
    429: "Too many requests",
    503: "Service unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body |= extra
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def field_errors(raw_errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as `{loc, msg, type}` with JSON-safe values."""
    return [
        {
            "loc": [part for part in error.get("loc", ()) if part != "body"],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in raw_errors
    ]


class ProblemException(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemException)
    async def _problem(request: Request, error: ProblemException) -> JSONResponse:
        return problem(error.status, error.detail, errors=error.errors, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return problem(422, "The request is invalid.", errors=field_errors(list(error.errors())))

    @app.exception_handler(asyncpg.exceptions.DataError)
    async def _data(request: Request, error: asyncpg.exceptions.DataError) -> JSONResponse:
        # SQLSTATE class 22 is about the values, and every value in a query comes from the
        # request: a NUL character, a date PostgreSQL cannot represent. The client can fix it.
        return problem(422, f"a value of the request cannot be used: {error}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers) if error.headers else None
        return problem(error.status_code, str(error.detail), headers=headers)

    @app.exception_handler(HTTPException)
    async def _fastapi_http(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers) if error.headers else None
        return problem(error.status_code, str(error.detail), headers=headers)
