"""The Back Market origin: GET /ws/orders as the OpenAPI file describes it.

Behind the same edge as the listing endpoints (rate limit, faults, holds, latency,
counts) and the same Basic token.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from simulator.edge import admission_of
from simulator.listings_api import (
    BackMarketError,
    StateDep,
    optional_int,
    page_number_of,
    page_size_of,
    paged_answer,
    require_token,
)
from simulator.orders import COUNTRY_CODES, ORDER_STATES, parse_datetime
from simulator.state import InvalidPageError

router = APIRouter(prefix="/ws", dependencies=[Depends(require_token)])


def _date_filter(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    moment = parse_datetime(raw)
    if moment is None:
        # Typically an unencoded "+00:00" that arrived as " 00:00".
        raise BackMarketError(400, f"{name}: enter a valid RFC 3339 date/time.")
    return moment


@router.get("/orders")
async def list_orders(request: Request, state: StateDep) -> JSONResponse:
    order_state = optional_int(request, "state")
    if order_state is not None and order_state not in ORDER_STATES:
        raise BackMarketError(400, f"state: {order_state} is not a valid choice.")
    country_code = request.query_params.get("country_code") or None
    if country_code is not None and country_code not in COUNTRY_CODES:
        raise BackMarketError(400, f"country_code: {country_code} is not a valid choice.")
    page_size = page_size_of(request, state)
    try:
        count, number, results = state.read_orders(
            page=page_number_of(request),
            page_size=page_size,
            date_creation=_date_filter(request, "date_creation"),
            date_modification=_date_filter(request, "date_modification"),
            state=order_state,
            country_code=country_code,
        )
    except InvalidPageError:
        raise BackMarketError(404, "Invalid page.") from None
    admission = admission_of(request.scope)
    if admission is not None and admission.fault == "truncate":
        # A short page with `next` still set: a watcher must not take it for the end.
        results = results[: len(results) // 2]
    return paged_answer(
        request, state, count=count, number=number, page_size=page_size, results=results
    )
