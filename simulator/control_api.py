"""/_sim/: the HTTP twin of SimulatorState's control methods, for out-of-process use.

No authentication and no edge behaviour: these calls are the test's, not the
client's, so they never count in stats, hit the rate limit or get faulted.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from simulator.listings_api import StateDep
from simulator.orders import OrderConflict, UnknownOrderError
from simulator.state import FaultKind, Hold, SimulatorState, UnknownListingError

router = APIRouter(prefix="/_sim", tags=["simulator control"])


class QuantityIn(BaseModel):
    quantity: int = Field(ge=0)


class OrderIn(BaseModel):
    units: int = Field(default=1, ge=1)
    # State 0: not listed by /ws/orders until POST /_sim/orders/{id}/pay.
    hidden: bool = False
    market: str | None = None


class BasketLineIn(BaseModel):
    listing: str
    units: int = Field(default=1, ge=1)


class BasketIn(BaseModel):
    lines: list[BasketLineIn] = Field(min_length=1)
    hidden: bool = False
    market: str | None = None


class CancelLineIn(BaseModel):
    # 4 cancelled, 5 refunded before shipping, 6 refunded after shipping.
    state: Literal[4, 5, 6] = 4


class NewListingIn(BaseModel):
    id: UUID | None = None
    listing_id: int | None = None
    sku: str | None = None
    quantity: int = Field(default=0, ge=0)
    publication_state: int = Field(default=2, ge=0, le=4)
    markets: list[str] | None = None
    title: str | None = None
    grade: str | None = None
    prices: dict[str, str] | None = None


class FaultIn(BaseModel):
    path_prefix: str = "/ws"
    count: int = Field(default=1, ge=1)
    kind: FaultKind = "500"
    method: str | None = None
    page: int | None = None


class HoldIn(BaseModel):
    path_prefix: str = "/ws"
    page: int | None = None
    method: str | None = None


class ConfigChangesIn(BaseModel):
    """Settings that may change while running; the catalogue's shape may not."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float | None = Field(default=None, ge=0)
    requests_per_10s: int | None = Field(default=None, ge=1)
    rate_limit_window_s: float | None = Field(default=None, gt=0)
    rate_limit_block_s: float | None = Field(default=None, ge=0)
    send_retry_after: bool | None = None
    fault_rate: float | None = Field(default=None, ge=0, le=1)
    slow_fault_s: float | None = Field(default=None, ge=0)
    timeout_fault_s: float | None = Field(default=None, ge=0)
    orders_per_minute: float | None = Field(default=None, ge=0)
    max_page_size: int | None = Field(default=None, ge=1)
    default_page_size: int | None = Field(default=None, ge=1)
    update_status_code: int | None = None
    update_error_body: str | None = None
    public_base_url: str | None = None


def _stock(state: SimulatorState, ref: str) -> dict[str, Any]:
    try:
        listing = state.listing(ref)
    except UnknownListingError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None
    return {key: listing[key] for key in ("id", "listing_id", "sku", "quantity")}


def _hold(state: SimulatorState, hold_id: int) -> Hold:
    found = state.find_hold(hold_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no hold {hold_id}")
    return found


@router.get("/stats")
async def read_stats(state: StateDep) -> dict[str, Any]:
    return state.stats()


@router.post("/stats/reset", status_code=status.HTTP_204_NO_CONTENT)
async def reset_stats(state: StateDep) -> Response:
    state.reset_stats()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/listings/{ref}")
async def read_listing(ref: str, state: StateDep, market: str | None = None) -> dict[str, Any]:
    try:
        return state.listing(ref, market)
    except UnknownListingError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None
    except KeyError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown market {market}"
        ) from None


@router.get("/listings/{ref}/quantity")
async def read_quantity(ref: str, state: StateDep) -> dict[str, Any]:
    return _stock(state, ref)


@router.put("/listings/{ref}/quantity")
async def write_quantity(ref: str, body: QuantityIn, state: StateDep) -> dict[str, Any]:
    try:
        state.set_quantity(ref, body.quantity)
    except UnknownListingError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None
    return _stock(state, ref)


@router.post("/listings/{ref}/orders")
async def place_order(ref: str, body: OrderIn, state: StateDep) -> dict[str, Any]:
    try:
        placed = state.place_order(ref, body.units, hidden=body.hidden, market=body.market)
    except UnknownListingError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None
    except ValueError as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None
    return {**_stock(state, ref), "order_id": placed.order_id, "line_id": placed.line_id}


@router.post("/orders", status_code=status.HTTP_201_CREATED)
async def place_basket(body: BasketIn, state: StateDep) -> dict[str, Any]:
    try:
        placed = state.place_basket(
            [(line.listing, line.units) for line in body.lines],
            hidden=body.hidden,
            market=body.market,
        )
    except UnknownListingError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None
    except ValueError as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None
    return state.order(placed.order_id)


@router.get("/orders")
async def read_orders(state: StateDep, include_hidden: bool = True) -> list[dict[str, Any]]:
    return state.orders(include_hidden=include_hidden)


@router.get("/orders/{order_id}")
async def read_order(order_id: int, state: StateDep) -> dict[str, Any]:
    try:
        return state.order(order_id)
    except UnknownOrderError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None


def _order_change_refused(error: Exception) -> HTTPException:
    if isinstance(error, UnknownOrderError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(error))
    return HTTPException(status.HTTP_409_CONFLICT, str(error))


@router.post("/orders/{order_id}/pay")
async def pay_order(order_id: int, state: StateDep) -> dict[str, Any]:
    try:
        return state.pay_order(order_id)
    except (UnknownOrderError, OrderConflict) as refused:
        raise _order_change_refused(refused) from None


@router.post("/orders/{order_id}/fail-payment")
async def fail_payment(order_id: int, state: StateDep) -> dict[str, Any]:
    try:
        return state.fail_payment(order_id)
    except (UnknownOrderError, OrderConflict) as refused:
        raise _order_change_refused(refused) from None


@router.post("/orders/{order_id}/lines/{line_id}/cancel")
async def cancel_line(
    order_id: int, line_id: int, state: StateDep, body: CancelLineIn | None = None
) -> dict[str, Any]:
    try:
        return state.cancel_line(order_id, line_id, (body or CancelLineIn()).state)
    except (UnknownOrderError, OrderConflict) as refused:
        raise _order_change_refused(refused) from None


@router.post("/listings", status_code=status.HTTP_201_CREATED)
async def add_listing(body: NewListingIn, state: StateDep) -> dict[str, Any]:
    fields = body.model_dump(exclude_none=True)
    if body.id is not None:
        fields["id"] = str(body.id)
    try:
        return state.add_listing(**fields)
    except ValueError as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None


@router.delete("/listings/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_listing(ref: str, state: StateDep) -> Response:
    try:
        state.remove_listing(ref)
    except UnknownListingError as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/faults", status_code=status.HTTP_201_CREATED)
async def add_fault(body: FaultIn, state: StateDep) -> dict[str, Any]:
    state.fail_next(body.path_prefix, body.count, body.kind, method=body.method, page=body.page)
    return body.model_dump()


@router.delete("/faults", status_code=status.HTTP_204_NO_CONTENT)
async def clear_faults(state: StateDep) -> Response:
    state.clear_faults()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/holds", status_code=status.HTTP_201_CREATED)
async def add_hold(body: HoldIn, state: StateDep) -> dict[str, Any]:
    return state.hold(body.path_prefix, body.page, method=body.method).as_dict()


@router.get("/holds/{hold_id}")
async def read_hold(hold_id: int, state: StateDep) -> dict[str, Any]:
    return _hold(state, hold_id).as_dict()


@router.post("/holds/{hold_id}/release")
async def release_hold(hold_id: int, state: StateDep) -> dict[str, Any]:
    found = _hold(state, hold_id)
    state.release(found)
    return found.as_dict()


@router.get("/config")
async def read_config(state: StateDep) -> dict[str, Any]:
    return state.config.as_dict()


@router.patch("/config")
async def change_config(body: ConfigChangesIn, state: StateDep) -> dict[str, Any]:
    # null means "off" only where off exists; elsewhere it means "leave as is".
    nullable = {"requests_per_10s", "public_base_url"}
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in nullable
    }
    try:
        return state.configure(**changes).as_dict()
    except ValueError as refused:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(refused)) from None
