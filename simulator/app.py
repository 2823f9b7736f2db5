"""Assembles the simulator: Back Market's /ws endpoints behind a Cloudflare-like edge,
plus the /_sim control API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from simulator import control_api, listings_api, orders_api, responses
from simulator.config import SimulatorConfig
from simulator.edge import CONTROL_PREFIX, CloudflareEdge, admission_of
from simulator.listings_api import BackMarketError, UpdateRejected
from simulator.state import SimulatorState


def _request_id(request: Request) -> str:
    admission = admission_of(request.scope)
    return admission.request_id if admission is not None else "simulator"


async def _back_market_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackMarketError)
    return responses.error_response(exc.status, exc.message, _request_id(request), code=exc.code)


async def _update_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UpdateRejected)
    state: SimulatorState = request.app.state.sim
    if state.config.update_error_body == "string":
        # What the spec documents for this endpoint: a bare JSON string.
        return JSONResponse(exc.message, status_code=400)
    return responses.error_response(400, exc.message, _request_id(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith(CONTROL_PREFIX):
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )
    # Unknown /ws routes and wrong methods (PATCH answers 405) in Back Market's shape.
    return responses.error_response(
        exc.status_code, str(exc.detail), _request_id(request), headers=exc.headers
    )


def create_simulator_app(
    config: SimulatorConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    """A fresh simulator; its SimulatorState is ``app.state.sim``.

    ``clock`` drives the rate limiter, so tests can move time instead of sleeping;
    ``wall_clock`` (aware datetimes) dates the orders.
    The customer-orders task runs only under a lifespan (uvicorn, LifespanManager).
    """
    state = SimulatorState(config, clock=clock, wall_clock=wall_clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_orders()
        try:
            yield
        finally:
            await state.close()

    # Back Market serves no OpenAPI document or docs pages of its own at these paths.
    app = FastAPI(
        title="Back Market simulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sim = state
    app.include_router(listings_api.router)
    app.include_router(orders_api.router)
    app.include_router(control_api.router)
    app.add_middleware(CloudflareEdge, state=state)
    app.add_exception_handler(BackMarketError, _back_market_error)
    app.add_exception_handler(UpdateRejected, _update_rejected)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app
