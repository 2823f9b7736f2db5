"""/_sim/: the HTTP twin of the state's control methods, for out-of-process use.

No authentication and no edge behaviour: these calls are the test's, not the
client's, so they never count in stats, use up the rate limit or get faulted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from simulator.holds import Hold
from simulator.refurbed.offers_api import StateDep
from simulator.refurbed.orders import OrderConflict, UnknownOrderError
from simulator.refurbed.state import (
    API_PREFIX,
    FaultKind,
    RefurbedSimulatorState,
    UnknownOfferError,
)
from simulator.refurbed.store import MAX_STOCK

router = APIRouter(prefix="/_sim", tags=["simulator control"])


class StockIn(BaseModel):
    stock: int = Field(ge=0, le=MAX_STOCK)


class NewOfferIn(BaseModel):
    sku: str
    id: int | None = Field(default=None, ge=1)
    stock: int = Field(default=0, ge=0, le=MAX_STOCK)
    state: Literal["OK", "UNVERIFIED", "SUBMITTED", "PENDING_REVIEW", "REJECTED"] = "OK"
    instance_name: str | None = None
    grading: Literal["A", "B", "C", "AA"] = "A"
    reference_price: str = "199.00"


class OrderLineIn(BaseModel):
    offer: str
    """The offer's id or SKU."""
    units: int = Field(default=1, ge=1)
    """Items of this offer: one item is one unit."""


class OrderIn(BaseModel):
    items: list[OrderLineIn] = Field(min_length=1)
    released_at: AwareDatetime | None = None


class ItemStateIn(BaseModel):
    state: Literal["ACCEPTED", "REJECTED", "CANCELLED", "SHIPPED", "RETURNED"]
    restock: bool = False
    """Give the item's unit back to its offer (REJECTED, CANCELLED or RETURNED only)."""


class FaultIn(BaseModel):
    path_prefix: str = API_PREFIX
    count: int = Field(default=1, ge=1)
    kind: FaultKind = "500"


class HoldIn(BaseModel):
    path_prefix: str = API_PREFIX


class ConfigChangesIn(BaseModel):
    """Settings that may change while running; the catalogue and the token may not."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float | None = Field(default=None, ge=0)
    requests_per_window: int | None = Field(default=None, ge=1)
    rate_limit_window_s: float | None = Field(default=None, gt=0)
    fault_rate: float | None = Field(default=None, ge=0, le=1)
    timeout_fault_s: float | None = Field(default=None, ge=0)


def _not_found(error: Exception) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(error))


def _stock(state: RefurbedSimulatorState, ref: str) -> dict[str, Any]:
    try:
        offer = state.offer(ref)
    except UnknownOfferError as missing:
        raise _not_found(missing) from None
    return {key: offer[key] for key in ("id", "sku", "stock")}


def _hold(state: RefurbedSimulatorState, hold_id: int) -> Hold:
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


@router.post("/offers", status_code=status.HTTP_201_CREATED)
async def add_offer(body: NewOfferIn, state: StateDep) -> dict[str, Any]:
    try:
        return state.add_offer(**body.model_dump(exclude_none=True))
    except ValueError as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None


@router.get("/offers/{ref}")
async def read_offer(ref: str, state: StateDep) -> dict[str, Any]:
    try:
        return state.offer(ref)
    except UnknownOfferError as missing:
        raise _not_found(missing) from None


@router.delete("/offers/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_offer(ref: str, state: StateDep) -> Response:
    try:
        state.remove_offer(ref)
    except UnknownOfferError as missing:
        raise _not_found(missing) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/offers/{ref}/stock")
async def read_stock(ref: str, state: StateDep) -> dict[str, Any]:
    return _stock(state, ref)


@router.put("/offers/{ref}/stock")
async def write_stock(ref: str, body: StockIn, state: StateDep) -> dict[str, Any]:
    try:
        state.set_stock(ref, body.stock)
    except UnknownOfferError as missing:
        raise _not_found(missing) from None
    return _stock(state, ref)


@router.post("/orders", status_code=status.HTTP_201_CREATED)
async def place_order(body: OrderIn, state: StateDep) -> dict[str, Any]:
    released_at: datetime | None = body.released_at
    try:
        return state.place_order(
            [(line.offer, line.units) for line in body.items], released_at=released_at
        )
    except UnknownOfferError as missing:
        raise _not_found(missing) from None
    except OrderConflict as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None


@router.get("/orders")
async def read_orders(state: StateDep) -> list[dict[str, Any]]:
    return state.orders()


@router.get("/orders/{order_id}")
async def read_order(order_id: int, state: StateDep) -> dict[str, Any]:
    try:
        return state.order(order_id)
    except UnknownOrderError as missing:
        raise _not_found(missing) from None


@router.post("/orders/{order_id}/items/{item_id}/state")
async def change_item_state(
    order_id: int, item_id: int, body: ItemStateIn, state: StateDep
) -> dict[str, Any]:
    try:
        return state.set_item_state(order_id, item_id, body.state, restock=body.restock)
    except UnknownOrderError as missing:
        raise _not_found(missing) from None
    except OrderConflict as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from None


@router.post("/faults", status_code=status.HTTP_201_CREATED)
async def add_fault(body: FaultIn, state: StateDep) -> dict[str, Any]:
    state.fail_next(body.path_prefix, body.count, body.kind)
    return body.model_dump()


@router.delete("/faults", status_code=status.HTTP_204_NO_CONTENT)
async def clear_faults(state: StateDep) -> Response:
    state.clear_faults()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/holds", status_code=status.HTTP_201_CREATED)
async def add_hold(body: HoldIn, state: StateDep) -> dict[str, Any]:
    return state.hold(body.path_prefix).as_dict()


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
    # null turns the limit off; elsewhere it means "leave as is".
    nullable = {"requests_per_window"}
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in nullable
    }
    try:
        return state.configure(**changes).as_dict()
    except ValueError as refused:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(refused)) from None
