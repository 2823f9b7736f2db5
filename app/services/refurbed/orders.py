"""Refurbed's orders feed, `OrderService/ListOrders`, read into neutral order lines.

Orders are listed once released to the merchant (ready to fulfil), filtered by `released_at`
(there is no "modified since": a later state change of an old order does not surface by time),
sorted by id and read with the id cursor until `has_more` is false. An `OrderItem` has no
quantity: one item is one unit. Its offer is named by `offer_data.offer_id` where the item came
from an offer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.services.marketplace.errors import BadResponse
from app.services.marketplace.times import parse_time
from app.services.marketplace.types import OrderLine
from app.services.refurbed.answers import UnexpectedShape, as_int

# OrderItemState, by its proto number; the number is what `OrderLine.state` holds.
ORDER_ITEM_STATES = {
    "UNSPECIFIED": 0,
    "NEW": 1,
    "REJECTED": 2,
    "CANCELLED": 3,
    "ACCEPTED": 4,
    "SHIPPED": 5,
    "RETURNED": 6,
}
# The states in which an item is a sale that took a unit; REJECTED, CANCELLED and RETURNED
# gave it back (or never took it).
SOLD_STATES = frozenset({"NEW", "ACCEPTED", "SHIPPED"})


def order_lines(body: object) -> tuple[list[OrderLine], datetime | None]:
    """The lines of one `Order` and its `released_at`; BadResponse when it is unusable."""
    if not isinstance(body, Mapping):
        raise BadResponse(f"an order must be a JSON object, got {type(body).__name__}")
    order_id = as_int(body.get("id"))
    if order_id is None:
        raise BadResponse("order has no integer 'id'")
    items = body.get("items")
    if not isinstance(items, list):
        raise BadResponse(f"order {order_id} has no 'items' list")
    released_at = parse_time(body.get("released_at"))
    return [_line(order_id, released_at, item) for item in items], released_at


def _line(order_id: int, released_at: datetime | None, item: object) -> OrderLine:
    if not isinstance(item, Mapping):
        raise BadResponse(f"order {order_id}: an item must be a JSON object")
    item_id = as_int(item.get("id"))
    state = item.get("state")
    if item_id is None or not isinstance(state, str):
        raise BadResponse(f"order {order_id}: an item has no integer 'id' or no 'state'")
    offer_data = item.get("offer_data")
    offer_id = as_int(offer_data.get("offer_id")) if isinstance(offer_data, Mapping) else None
    sku = item.get("sku")
    return OrderLine(
        id=item_id,
        order_id=order_id,
        listing_id=None,
        sku=(sku.strip() or None) if isinstance(sku, str) else None,
        quantity=1,
        # A state this adapter does not know yet counts as UNSPECIFIED, not as a sale.
        state=ORDER_ITEM_STATES.get(state, 0),
        created_at=released_at,
        listing_ref=str(offer_id) if offer_id else None,
        sold=state in SOLD_STATES,
        order_changed_at=released_at,
    )


@dataclass(frozen=True, slots=True)
class OrdersPage:
    """One ListOrders answer: its lines, how many orders, the newest release, the cursor on."""

    lines: list[OrderLine]
    orders: int
    newest_release: datetime | None
    has_more: bool
    last_id: int | None


def orders_page(body: Any, *, starting_after: int | None) -> OrdersPage:
    """A ListOrders body `{"orders", "has_more"}`, or UnexpectedShape (an unusable order too:
    skipping it would lose a sale)."""
    if not isinstance(body, Mapping):
        raise UnexpectedShape("the body is not a JSON object")
    orders = body.get("orders")
    if not isinstance(orders, list):
        raise UnexpectedShape("the body has no 'orders' list")
    has_more = body.get("has_more")
    if not isinstance(has_more, bool):
        raise UnexpectedShape("the body has no boolean 'has_more'")
    lines: list[OrderLine] = []
    newest: datetime | None = None
    last_id: int | None = None
    for index, order in enumerate(orders):
        try:
            order_line_list, released_at = order_lines(order)
        except BadResponse as exc:
            raise UnexpectedShape(f"order {index}: {exc}") from None
        lines.extend(order_line_list)
        if released_at is not None and (newest is None or released_at > newest):
            newest = released_at
        last_id = as_int(order["id"])
    if has_more:
        if last_id is None:
            raise UnexpectedShape("'has_more' is true but the page has no orders")
        if starting_after is not None and last_id <= starting_after:
            raise UnexpectedShape(
                f"'has_more' is true but the last order ({last_id}) is not past the cursor "
                f"({starting_after})"
            )
    return OrdersPage(
        lines=lines, orders=len(orders), newest_release=newest, has_more=has_more, last_id=last_id
    )
