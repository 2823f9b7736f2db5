"""Reading Refurbed's cursor-paged lists to their end: every offer (a bulk sync) and the orders
released since a moment (the watcher, the sales during an addition).

A page asks for 100 (the most a page may hold) sorted by id, the next one `starting_after` the
last id of the one before, until a page says `has_more: false`: ⌈N/100⌉ calls for N offers, no
page cap and no sleeps (the account's request budget paces the calls). A page that says more
follow but cannot lead further (empty, or not past its cursor) is a wrong shape: retried, then
BadResponse, never followed round in a loop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from functools import partial
from typing import Any

from app.services.marketplace.budget import CallKind
from app.services.marketplace.errors import IncompleteFeed, MarketplaceError
from app.services.marketplace.times import format_time
from app.services.marketplace.types import ListingPage, OrderLinesPage
from app.services.refurbed.methods import LIST_OFFERS, LIST_ORDERS, MAX_PAGE_SIZE
from app.services.refurbed.offers import offer_page
from app.services.refurbed.orders import orders_page
from app.services.refurbed.transport import Transport

OFFERS_FEED = "offers"


def _page_request(starting_after: int | None, **filters: Any) -> dict[str, Any]:
    pagination: dict[str, Any] = {"limit": MAX_PAGE_SIZE}
    if starting_after is not None:
        pagination["starting_after"] = str(starting_after)
    body: dict[str, Any] = {"pagination": pagination, "sort": {"by": "ID", "order": "ASC"}}
    if filters:
        body["filter"] = filters
    return body


async def iter_offer_pages(
    transport: Transport, *, kind: CallKind = CallKind.BULK
) -> AsyncGenerator[ListingPage, None]:
    """Yield every page of the account's offers, then raise IncompleteFeed if any was lost.

    The first page failing raises its own error. A later page failing (after its retries) ends
    the feed: the pages read were yielded, then IncompleteFeed names it. An offer without a
    usable id or stock is left out of its page and named by IncompleteFeed at the end.
    """
    page_number = 0
    cursor: int | None = None
    seen: set[str] = set()
    requests = 0
    failed: dict[int, MarketplaceError] = {}
    unusable: dict[int, list[str]] = {}
    while True:
        page_number += 1
        starting_after = cursor
        try:
            reply = await transport.call(
                LIST_OFFERS,
                _page_request(starting_after),
                parse=partial(offer_page, page=page_number, starting_after=starting_after),
                kind=kind,
            )
        except MarketplaceError as exc:
            if page_number == 1:
                raise
            failed[page_number] = exc
            requests += exc.attempts
            break
        page = reply.value
        requests += reply.attempts
        if page.unusable:
            unusable[page_number] = page.unusable
        fresh = [listing for listing in page.listings if listing.id not in seen]
        repeated = [listing.id for listing in page.listings if listing.id in seen]
        seen.update(listing.id for listing in fresh)
        yield ListingPage(
            feed=OFFERS_FEED,
            page=page_number,
            fetched_at=reply.sent_at,
            listings=fresh,
            requests=reply.attempts,
            repeated=repeated,
        )
        if not page.has_more:
            break
        cursor = page.last_id
    if failed or unusable:
        raise IncompleteFeed(
            OFFERS_FEED,
            failed,
            None,
            len(seen),
            endpoint=LIST_OFFERS.endpoint,
            noun="offers",
            attempts=requests,
            unusable=unusable,
        )


async def iter_released_order_lines(
    transport: Transport, *, since: datetime, kind: CallKind
) -> AsyncGenerator[OrderLinesPage, None]:
    """The lines of every order released at or after `since`, page after page; any failure is
    raised as it comes (the caller keeps its watermark and reads again)."""
    released_at = {"ge": format_time(since)}
    cursor: int | None = None
    while True:
        starting_after = cursor
        reply = await transport.call(
            LIST_ORDERS,
            _page_request(starting_after, released_at=released_at),
            parse=partial(orders_page, starting_after=starting_after),
            kind=kind,
        )
        page = reply.value
        yield OrderLinesPage(
            lines=page.lines,
            orders=page.orders,
            requests=reply.attempts,
            newest_change=page.newest_release,
        )
        if not page.has_more:
            return
        cursor = page.last_id
