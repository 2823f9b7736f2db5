"""Assembles the Refurbed simulator: OfferService and OrderService behind the edge
(rate limit, faults, holds, latency), plus the /_sim control API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from simulator.refurbed import control_api, offers_api, orders_api
from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.edge import CONTROL_PREFIX, RefurbedEdge
from simulator.refurbed.responses import Code, RpcError, status_response
from simulator.refurbed.state import RefurbedSimulatorState


async def _rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RpcError)
    return status_response(exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith(CONTROL_PREFIX):
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )
    # grpc-gateway's answers for an unknown path and a method other than POST.
    if exc.status_code == 405:
        return status_response(Code.UNIMPLEMENTED, "Method Not Allowed", http_status=405)
    if exc.status_code == 404:
        return status_response(Code.NOT_FOUND, "Not Found")
    return status_response(Code.UNKNOWN, str(exc.detail), http_status=exc.status_code)


def create_refurbed_simulator_app(
    config: RefurbedSimulatorConfig,
    *,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    skus: Sequence[str] | None = None,
) -> FastAPI:
    """A fresh simulator; its RefurbedSimulatorState is ``app.state.sim``.

    ``wall_clock`` (aware datetimes) dates orders and drives the rate-limit windows, so
    tests can move time instead of sleeping. ``skus`` names the generated offers in
    order (one per offer; default ``SKU-0000001``...).
    """
    state = RefurbedSimulatorState(config, wall_clock=wall_clock, skus=skus)
    # Refurbed serves no OpenAPI document or docs pages of its own at these paths.
    app = FastAPI(
        title="Refurbed simulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sim = state
    app.include_router(offers_api.router)
    app.include_router(orders_api.router)
    app.include_router(control_api.router)
    app.add_middleware(RefurbedEdge, state=state)
    app.add_exception_handler(RpcError, _rpc_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app
