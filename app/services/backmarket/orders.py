"""The orders feed, `GET /ws/orders`: the one incremental signal of which listings sold.

Orders in state 0 (payment being verified) and 8 (not paid) are never listed by Back Market,
so a sale can lower a listing's quantity before the feed shows it. Pages are read one after
the other by page number with the same filters (`next` is only read as "there is more", never
followed, so the token never goes to another host), until a page says there is no next one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from app.services.backmarket.answers import as_int
from app.services.backmarket.budget import CallKind
from app.services.backmarket.errors import BadResponse
from app.services.backmarket.pages import MAX_PAGE_SIZE, PagedEndpoint, fetch_page
from app.services.backmarket.transport import Transport
from app.services.marketplace.times import format_time, parse_time
from app.services.marketplace.types import OrderLine

ORDERS_PATH = "/ws/orders"
ENDPOINT_LIST_ORDERS = "GET /ws/orders"
# A feed that keeps pointing further past this many pages is broken, not busy.
MAX_ORDER_PAGES = 2_000


# Line states in which the units are not (or no longer) sold: 8 pending payment, 4 cancelled,
# 5 and 6 refunded, 7 not paid. (0 new and 9 on hold still hold the unit.)
UNSOLD_LINE_STATES = frozenset({4, 5, 6, 7, 8})


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    state: int | None
    created_at: datetime | None
    modified_at: datetime | None
    lines: list[OrderLine]

    @classmethod
    def from_api(cls, body: object) -> Order:
        """Raise BadResponse when the order or one of its lines has no usable id or quantity."""
        if not isinstance(body, Mapping):
            raise BadResponse(f"an order must be a JSON object, got {type(body).__name__}")
        order_id = as_int(body.get("order_id"))
        if order_id is None:
            raise BadResponse("order has no integer 'order_id'")
        raw_lines = body.get("orderlines")
        if not isinstance(raw_lines, list):
            raise BadResponse(f"order {order_id} has no 'orderlines' list")
        modified_at = parse_time(body.get("date_modification"))
        return cls(
            order_id=order_id,
            state=as_int(body.get("state")),
            created_at=parse_time(body.get("date_creation")),
            modified_at=modified_at,
            lines=[_line(order_id, raw, modified_at=modified_at) for raw in raw_lines],
        )


def _line(order_id: int, body: Any, *, modified_at: datetime | None) -> OrderLine:
    if not isinstance(body, Mapping):
        raise BadResponse(f"order {order_id}: a line must be a JSON object")
    line_id = as_int(body.get("id"))
    quantity = as_int(body.get("quantity"))
    state = as_int(body.get("state"))
    if line_id is None or quantity is None or state is None:
        raise BadResponse(f"order {order_id}: a line has no integer 'id', 'quantity' or 'state'")
    sku = body.get("listing")
    listing_id = as_int(body.get("listing_id"))
    return OrderLine(
        id=line_id,
        order_id=order_id,
        listing_id=listing_id,
        sku=None if sku is None else str(sku),
        quantity=quantity,
        state=state,
        created_at=parse_time(body.get("date_creation")),
        listing_ref=None if listing_id is None else str(listing_id),
        sold=state not in UNSOLD_LINE_STATES,
        order_changed_at=modified_at,
    )


ORDERS = PagedEndpoint(
    path=ORDERS_PATH,
    endpoint=ENDPOINT_LIST_ORDERS,
    noun="orders",
    parse_item=Order.from_api,
    item_key=lambda order: order.order_id,
)


@dataclass(frozen=True, slots=True)
class OrderPage:
    page: int
    orders: list[Order]
    count: int
    requests: int


async def iter_order_pages(
    transport: Transport,
    *,
    market: str,
    modified_since: datetime | None,
    created_since: datetime | None,
    kind: CallKind,
) -> AsyncIterator[OrderPage]:
    """Every page of the orders matching the filters, in order; errors are raised as they come."""
    filters: dict[str, str] = {}
    if modified_since is not None:
        filters["date_modification"] = format_time(modified_since)
    if created_since is not None:
        filters["date_creation"] = format_time(created_since)
    page = 1
    while True:
        params = httpx.QueryParams({**filters, "page": page, "page-size": MAX_PAGE_SIZE})
        fetched = await fetch_page(
            ORDERS, transport=transport, market=market, page=page, params=params, kind=kind
        )
        yield OrderPage(
            page=page, orders=fetched.items, count=fetched.count, requests=fetched.requests
        )
        if fetched.next_url is None:
            return
        if not fetched.items:
            # An empty page pointing further would have us walk an endless chain of pages.
            raise BadResponse(
                f"{ENDPOINT_LIST_ORDERS} page {page} is empty but points to a next page",
                endpoint=ENDPOINT_LIST_ORDERS,
                status=200,
                attempts=fetched.requests,
            )
        if page >= MAX_ORDER_PAGES:
            raise BadResponse(
                f"{ENDPOINT_LIST_ORDERS} still points further after {page} pages",
                endpoint=ENDPOINT_LIST_ORDERS,
                attempts=0,
            )
        page += 1
