"""Set-quantity: make a listing's quantity n, only while it is still what the person saw.

A set is one kind of stock change (`change.SetTo`): it runs through `entry.change_stock` like
an addition, with the same guarantees (the variation's lock across processes, the update
budget reserved first, the Idempotency-Key, the unknown outcome resolved by a keyed retry that
re-reads first, the units sold during the update subtracted once). What a set adds is the
compare: with `expected_quantity`, the live quantity read under the lock must equal it, or
nothing is sent and the live quantity is answered (409 `quantity_changed`).
"""

from __future__ import annotations

from prometheus_client import Counter

from app.services.context import ServiceContext
from app.services.quantity.change import SetTo
from app.services.quantity.entry import CHANGE_LOCK_TIMEOUT_SECONDS, change_stock
from app.services.quantity.schemas import SetResult

SET_QUANTITY_OUTCOMES = Counter(
    "stock_sync_set_quantity_total",
    "PUT /variations/{id}/quantity answers, by outcome.",
    ["outcome"],
)


async def set_quantity(
    ctx: ServiceContext,
    *,
    variation_id: int,
    quantity: int,
    expected_quantity: int | None = None,
    marketplace_id: int,
    idempotency_key: str | None = None,
    lock_timeout: float = CHANGE_LOCK_TIMEOUT_SECONDS,
) -> SetResult:
    """Make the variation's listing hold `quantity` (0..ADD_QUANTITY_LIMIT).

    With `expected_quantity`, only when the live quantity read under the variation's lock is
    that: otherwise Conflict `quantity_changed` with `live_quantity`, nothing sent. Units sold
    between that read and the update's arrival are subtracted from `quantity` once
    (`sales_during_update`): the quantity was meant for the stock read, and a unit sold after
    the read must not go back on sale. Every other guarantee and error is
    `entry.change_stock`'s (a keyed retry after an unknown outcome: the target there →
    recorded, the previous quantity there → sent again, anything else → Conflict).
    """
    return await change_stock(
        ctx,
        SetTo(quantity=quantity, expected=expected_quantity),
        variation_id=variation_id,
        marketplace_id=marketplace_id,
        idempotency_key=idempotency_key,
        lock_timeout=lock_timeout,
        outcomes=SET_QUANTITY_OUTCOMES,
    )
