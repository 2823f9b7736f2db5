"""Domain errors and the one place that maps them to HTTP answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.detail, **exc.extra},
            headers=exc.headers,
        )
