"""Add-quantity: add n to a listing's quantity on Back Market, never losing or doubling it.

An addition is one kind of stock change (`change.AddUnits`): it runs through
`entry.change_stock`, whose docstring says how (fetch-then-update under the variation's lock,
the update budget, the Idempotency-Key, the sales made during the update).
"""

from __future__ import annotations

from prometheus_client import Counter

from app.services.context import ServiceContext
from app.services.quantity.change import AddUnits, check_added_quantity
from app.services.quantity.entry import CHANGE_LOCK_TIMEOUT_SECONDS, change_stock
from app.services.quantity.schemas import AddResult

ADD_LOCK_TIMEOUT_SECONDS = CHANGE_LOCK_TIMEOUT_SECONDS

ADD_QUANTITY_OUTCOMES = Counter(
    "stock_sync_add_quantity_total",
    "POST /variations/{id}/add-quantity answers, by outcome.",
    ["outcome"],
)

__all__ = ["ADD_QUANTITY_OUTCOMES", "add_quantity", "check_added_quantity"]


async def add_quantity(
    ctx: ServiceContext,
    *,
    variation_id: int,
    quantity: int,
    marketplace_id: int,
    idempotency_key: str | None = None,
    lock_timeout: float = ADD_LOCK_TIMEOUT_SECONDS,
    floor_at_zero: bool = False,
) -> AddResult:
    """Add `quantity` (negative removes) to the variation's listing on Back Market: the live
    quantity plus `quantity` is sent, refused (Conflict `below_zero`, nothing sent) when it
    would be below zero. Every guarantee and error is `entry.change_stock`'s.

    `floor_at_zero` (not offered over HTTP): a removal that would go below zero removes down
    to 0 instead of being refused; the orders watcher undoes sales with it.
    """
    return await change_stock(
        ctx,
        AddUnits(added=quantity, floor_at_zero=floor_at_zero),
        variation_id=variation_id,
        marketplace_id=marketplace_id,
        idempotency_key=idempotency_key,
        lock_timeout=lock_timeout,
        outcomes=ADD_QUANTITY_OUTCOMES,
    )
