"""Domain errors and the one place that maps them to HTTP answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class DomainError(Exception):
    """An outcome a client must be told about; `status_code` is its HTTP status."""

    status_code = 500

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class InvalidRequest(DomainError):
    status_code = 422


class TooManyRequests(DomainError):
    status_code = 429


class UpstreamFailed(DomainError):
    """Back Market failed or was unreachable."""

    status_code = 502


class UpstreamOutcomeUnknown(DomainError):
    """An update was sent and no answer came: it may or may not have been applied."""

    status_code = 504


class Unavailable(DomainError):
    status_code = 503


class ErrorBody(BaseModel):
    """Every error answer: `detail`, and for some errors more fields (`run_id`, `reason`...)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]] = Field(
        description="what went wrong; for a request that fails validation, one item per problem"
    )


def error_responses(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for its error statuses, each answering an ErrorBody."""
    return {status: {"model": ErrorBody, "description": text} for status, text in described.items()}


def _body_not_decodable(exc: StarletteHTTPException) -> bool:
    # FastAPI answers 400 when reading a JSON body fails other than by a JSONDecodeError (which
    # it answers 422): bytes that are not UTF-8, or nesting too deep for the parser.
    return exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.detail, **exc.extra},
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _body_not_decodable(exc):
            # The same shape as FastAPI's own answer to a body that is not JSON.
            problem = {
                "type": "json_invalid",
                "loc": ["body"],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": f"the body is not UTF-8 JSON ({type(exc.__cause__).__name__})"},
            }
            return JSONResponse(status_code=422, content={"detail": [problem]})
        return await http_exception_handler(request, exc)
