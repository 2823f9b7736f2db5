"""`BackMarketClient`: read a market's listings, read one listing, update one listing's stock.

Every call of one client shares one request budget (a sliding-window log of send times,
`settings.backmarket_requests_per_10s` per 10.2 s) and one "not before" time set by a 429,
because Cloudflare counts and blocks per token, not per caller. How a request is retried is in
`transport`; how a whole feed is read, in `pages`.

`update_listing` also raises `OutcomeUnknown` for a 2xx whose body is not a listing: the update
may have been applied, the caller must read back. A 202 is "accepted", not "done": Back Market
may apply it later. It counts as applied only when its body, or a read-back right after it,
shows the quantity sent; otherwise it is `OutcomeUnknown`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any

import httpx

from app.config import FIRST_MARKETPLACE_ID, Settings
from app.services.backmarket.answers import UnexpectedShape, describe_body, request_id_of
from app.services.backmarket.budget import CallKind, Clock, Sleep
from app.services.backmarket.errors import BackMarketError, BadResponse, OutcomeUnknown
from app.services.backmarket.listing import (
    ENDPOINT_GET_LISTING,
    ENDPOINT_LIST_LISTINGS,
    ENDPOINT_LISTING_DETAIL,
    ENDPOINT_UPDATE_LISTING,
    LISTING_DETAIL_PATH,
    LISTINGS_PATH,
    Listing,
    ListingPage,
    listing_from_api,
    listing_path,
)
from app.services.backmarket.orders import OrderPage, iter_order_pages
from app.services.backmarket.pages import MAX_PAGE_SIZE, PagedEndpoint, iter_pages
from app.services.backmarket.transport import Transport, body_as_is
from app.services.marketplace.account import AccountConnection

# The whole client logs under the package's name, so one logger setting covers it.
logger = logging.getLogger("app.services.backmarket")

_LISTINGS: PagedEndpoint[Listing] = PagedEndpoint(
    path=LISTINGS_PATH,
    endpoint=ENDPOINT_LIST_LISTINGS,
    noun="listings",
    parse_item=listing_from_api,
    item_key=lambda listing: listing.id,
    # One listing without a usable id or quantity must not cost the other 49 of its page.
    skip_unusable_items=True,
)


def _listing_of(body: Any) -> Listing:
    try:
        return listing_from_api(body)
    except BadResponse as exc:
        raise UnexpectedShape(str(exc)) from None


class BackMarketClient(AccountConnection):
    """One HTTP client for Back Market, shared by every caller of the process."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        marketplace_id: int = FIRST_MARKETPLACE_ID,
    ) -> None:
        self._settings = settings
        self._default_market = settings.backmarket_markets[0]
        max_connections = settings.backmarket_page_concurrency + 8
        super().__init__(
            marketplace_id=marketplace_id,
            http=http,
            base_url=settings.backmarket_base_url,
            read_timeout_seconds=settings.backmarket_read_timeout_seconds,
            connect_timeout_seconds=settings.backmarket_connect_timeout_seconds,
            max_connections=max_connections,
            requests_per_window=settings.backmarket_requests_per_10s,
            clock=clock,
            sleep=sleep,
        )
        self._transport = Transport(
            settings,
            http=self._http,
            budget=self._budget,
            marketplace_id=marketplace_id,
            max_in_flight=max_connections,
            clock=clock,
            sleep=sleep,
        )

    # The retry policy lives on the transport; these let a caller (or a test) tune it here.

    @property
    def default_rate_limit_pause_seconds(self) -> float:
        return self._transport.default_rate_limit_pause_seconds

    @default_rate_limit_pause_seconds.setter
    def default_rate_limit_pause_seconds(self, seconds: float) -> None:
        self._transport.default_rate_limit_pause_seconds = seconds

    @property
    def backoff_base_seconds(self) -> float:
        return self._transport.backoff_base_seconds

    @backoff_base_seconds.setter
    def backoff_base_seconds(self, seconds: float) -> None:
        self._transport.backoff_base_seconds = seconds

    @property
    def backoff_cap_seconds(self) -> float:
        return self._transport.backoff_cap_seconds

    @backoff_cap_seconds.setter
    def backoff_cap_seconds(self, seconds: float) -> None:
        self._transport.backoff_cap_seconds = seconds

    @property
    def max_retry_wait_seconds(self) -> float:
        return self._transport.max_retry_wait_seconds

    @max_retry_wait_seconds.setter
    def max_retry_wait_seconds(self, seconds: float) -> None:
        self._transport.max_retry_wait_seconds = seconds

    @property
    def requests_total(self) -> int:
        """Requests sent so far, whatever their outcome."""
        return self._transport.requests_total

    def __repr__(self) -> str:
        return (
            f"BackMarketClient(base_url={self._settings.backmarket_base_url!r}, "
            f"markets={self._settings.backmarket_markets!r}, requests_total={self.requests_total})"
        )

    def stats(self) -> dict[str, int]:
        """Requests sent so far, keyed "METHOD /path/template outcome"."""
        return self._transport.stats()

    # -- public calls -------------------------------------------------------------------------

    async def iter_listing_pages(
        self, market: str, *, page_size: int = MAX_PAGE_SIZE, concurrency: int | None = None
    ) -> AsyncIterator[ListingPage]:
        """Yield every page of the market's listings as it arrives, then check completeness.

        Page 1 failing raises its own error. Any later page failing does not stop the others:
        after the last page that could be read, IncompleteFeed names the failed pages. A listing
        without a usable `id` or `quantity` is left out of its page and named by IncompleteFeed.
        Fewer unique listing ids than the largest `count` of any page is IncompleteFeed too; more
        is accepted (the catalogue grew while it was read). A listing on two pages is yielded
        once (the copy that arrived first) and named in the later page's `repeated`. Close the
        iterator (`contextlib.aclosing`) if you stop early.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        workers = self._settings.backmarket_page_concurrency if concurrency is None else concurrency
        if workers < 1:
            raise ValueError("concurrency must be at least 1")
        pages = iter_pages(
            _LISTINGS,
            transport=self._transport,
            market=market,
            page_size=page_size,
            workers=workers,
        )
        # Closing this generator early must close the page reader too, which cancels its fetches.
        async with aclosing(pages) as arrivals:
            async for page, pages_expected in arrivals:
                yield ListingPage(
                    feed=market,
                    page=page.page,
                    fetched_at=page.fetched_at,
                    listings=page.items,
                    count=page.count,
                    pages_expected=pages_expected,
                    requests=page.requests,
                    repeated=[str(key) for key in page.repeated],
                )

    async def get_listing(
        self,
        listing_ref: str | int,
        *,
        market: str | None = None,
        kind: CallKind = CallKind.LIVE,
    ) -> Listing:
        """GET one listing by UUID (preferred) or integer listing_id.

        A 2xx that is not a usable listing is retried like a 5xx, then BadResponse.
        """
        reply = await self._transport.request(
            "GET",
            listing_path(listing_ref),
            endpoint=ENDPOINT_GET_LISTING,
            market=market or self._default_market,
            kind=kind,
            parse=_listing_of,
        )
        return reply.value

    async def get_listing_detail(
        self, *, sku: str, market: str | None = None, kind: CallKind = CallKind.LIVE
    ) -> Listing:
        """GET the listing of a SKU (`/ws/listings/detail?sku=`); ListingNotFound when none."""
        reply = await self._transport.request(
            "GET",
            LISTING_DETAIL_PATH,
            endpoint=ENDPOINT_LISTING_DETAIL,
            market=market or self._default_market,
            params=httpx.QueryParams({"sku": sku}),
            kind=kind,
            parse=_listing_of,
        )
        return reply.value

    async def iter_order_pages(
        self,
        *,
        modified_since: datetime | None = None,
        created_since: datetime | None = None,
        kind: CallKind = CallKind.LIVE,
        market: str | None = None,
    ) -> AsyncIterator[OrderPage]:
        """Every page of `GET /ws/orders` modified (or created) at or after the given times."""
        async for page in iter_order_pages(
            self._transport,
            market=market or self._default_market,
            modified_since=modified_since,
            created_since=created_since,
            kind=kind,
        ):
            yield page

    async def update_listing(
        self,
        listing_ref: str | int,
        *,
        quantity: int,
        market: str | None = None,
        kind: CallKind = CallKind.LIVE,
    ) -> Listing:
        """POST {"quantity": n} to one listing and return the listing Back Market answers.

        Raises OutcomeUnknown when the update may have been applied without a usable answer,
        and for a 202 that neither its body nor a read-back confirms (Back Market may apply it
        later).
        """
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise ValueError("quantity must be a non-negative integer")
        path = listing_path(listing_ref)
        market = market or self._default_market
        reply = await self._transport.request(
            "POST",
            path,
            endpoint=ENDPOINT_UPDATE_LISTING,
            market=market,
            json_body={"quantity": quantity},
            repeatable=False,
            kind=kind,
            # Judged here, not by the transport: a 202 without a listing is read back.
            parse=body_as_is,
        )
        status = reply.response.status_code
        request_id = request_id_of(reply.response, reply.body)

        def unknown(why: str) -> OutcomeUnknown:
            return OutcomeUnknown(
                self._transport.scrub(
                    f"POST {path} answered {status} {why}: the update may or may not have been "
                    "applied"
                ),
                endpoint=ENDPOINT_UPDATE_LISTING,
                status=status,
                request_id=request_id,
                attempts=reply.attempts,
            )

        try:
            answered = listing_from_api(reply.body)
        except BadResponse as exc:
            if status != 202:
                raise unknown(f"with {describe_body(reply.response, reply.body)} ({exc})") from None
        else:
            # A 200's listing is Back Market's word, even when an order moved the quantity
            # already; a 202's only when it shows what was sent.
            if status != 202 or answered.quantity == quantity:
                return answered
        logger.debug("POST %s answered 202: reading the listing back to confirm it", path)
        try:
            read_back = await self.get_listing(listing_ref, market=market, kind=kind)
        except BackMarketError as exc:
            raise unknown(f"(accepted) but reading the listing back failed ({exc})") from exc
        if read_back.quantity != quantity:
            raise unknown(
                f"(accepted) but the listing still shows quantity {read_back.quantity}, not "
                f"{quantity}; Back Market may apply it later"
            )
        return read_back
