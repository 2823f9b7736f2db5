"""Builds the FastAPI application; the lifespan owns the engine, the HTTP client and the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.config import Settings, get_settings
from app.deps import require_api_key
from app.errors import error_responses, install_error_handlers
from app.http_limits import BodySizeLimitMiddleware
from app.logs import RequestIdMiddleware, configure_logging, reroute_library_loggers
from app.routers import health, metrics, status_page, sync, variations
from app.wiring import open_container, start_background, stop_background


def create_app(
    settings: Settings | None = None,
    *,
    backmarket_http: httpx.AsyncClient | None = None,
    marketplace_http: Mapping[int, httpx.AsyncClient] | None = None,
) -> FastAPI:
    """`backmarket_http` (marketplace 1) and `marketplace_http` (any other, by id) let tests and
    the demo hand in clients bound to simulators."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reroute_library_loggers()
        async with open_container(
            settings, backmarket_http=backmarket_http, marketplace_http=marketplace_http
        ) as container:
            app.state.container = container
            await start_background(container)
            try:
                yield
            finally:
                await stop_background(container)

    app = FastAPI(
        title="stock-sync",
        version="0.1.0",
        summary="Keeps per-marketplace stock in step with Back Market.",
        lifespan=lifespan,
    )
    # Innermost: its 413 goes out through the request-id and CORS middleware like any answer.
    app.add_middleware(BodySizeLimitMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
        )
    # Outermost: every answer, errors included, carries the request id its log lines carry.
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    protected = [Depends(require_api_key)]
    unauthorized = error_responses({401: "API_KEYS is set and no valid key was sent"})
    app.include_router(health.router)
    app.include_router(sync.router, dependencies=protected, responses=unauthorized)
    app.include_router(variations.router, dependencies=protected, responses=unauthorized)
    app.include_router(metrics.router, dependencies=protected, responses=unauthorized)
    # HTML: signs in with its own cookie (API_KEYS) and CSRF-protects its forms.
    app.include_router(status_page.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = variations.document_checked_inputs(
                FastAPI.openapi(app), add_quantity_limit=settings.add_quantity_limit
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory app.main:app_factory`: settings are read when the server starts,
    and LOG_FORMAT / LOG_LEVEL replace uvicorn's own logging set-up (it has run by then)."""
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` works, yet importing this module builds nothing.
    if name == "app":
        return app_factory()
    raise AttributeError(name)
