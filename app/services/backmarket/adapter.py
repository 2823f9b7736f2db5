"""Back Market behind the marketplace interface: one `BackMarketMarketplace` per account.

The client (`client`), its request budget, its page reader and the orders feed stay Back Market's;
this adapter only answers in the neutral types. Feeds are the account's Accept-Language markets.
A listing is named by its UUID or integer listing_id; a variation never synced is looked up by
its SKU (`GET /ws/listings/detail?sku=`) before it is read or updated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from datetime import datetime
from typing import cast

import httpx

from app.config import MarketplaceSettings, Settings
from app.services.backmarket.client import BackMarketClient
from app.services.backmarket.listing import ENDPOINT_GET_LISTING
from app.services.backmarket.orders import OrderPage
from app.services.marketplace import (
    BudgetSnapshot,
    CallKind,
    Clock,
    Listing,
    ListingPage,
    ListingRef,
    MarketplaceKind,
    NotFound,
    OrderLinesPage,
    OrderTime,
    Sleep,
)

# Back Market serves at most 50 listings a page.
PAGE_SIZE = 50


def client_settings(config: MarketplaceSettings) -> Settings:
    """The `BACKMARKET_*` settings the client reads, for one account's configuration."""
    return Settings.model_construct(
        backmarket_base_url=config.base_url,
        backmarket_token=config.token,
        backmarket_user_agent=config.user_agent,
        backmarket_markets=list(config.markets),
        backmarket_requests_per_10s=config.requests_per_10s,
        backmarket_updates_per_hour=config.updates_per_hour,
        backmarket_connect_timeout_seconds=config.connect_timeout_seconds,
        backmarket_read_timeout_seconds=config.read_timeout_seconds,
        backmarket_max_attempts=config.max_attempts,
        backmarket_page_concurrency=config.page_concurrency,
    )


class BackMarketMarketplace:
    """One Back Market account (a token on one platform: .fr, .com, .co.jp) as a `Marketplace`."""

    kind: MarketplaceKind = "backmarket"

    def __init__(self, config: MarketplaceSettings, *, client: BackMarketClient) -> None:
        self.config = config
        # Back Market's own client: tests and tools tune its retry policy here.
        self.client = client

    @classmethod
    def build(
        cls,
        config: MarketplaceSettings,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> BackMarketMarketplace:
        client = BackMarketClient(
            client_settings(config), http=http, sleep=sleep, clock=clock, marketplace_id=config.id
        )
        return cls(config, client=client)

    @property
    def id(self) -> int:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def updates_per_hour(self) -> int:
        return self.config.updates_per_hour

    @property
    def feeds(self) -> Sequence[str]:
        return self.config.markets

    def __repr__(self) -> str:
        return f"BackMarketMarketplace(id={self.id}, client={self.client!r})"

    def iter_listing_pages(self, feed: str) -> AsyncIterator[ListingPage]:
        return self.client.iter_listing_pages(feed, page_size=PAGE_SIZE)

    async def get_listing(self, ref: ListingRef, *, kind: CallKind = CallKind.LIVE) -> Listing:
        reference = (ref.reference or "").strip()
        if reference:
            return await self.client.get_listing(reference, kind=kind)
        return await self._listing_by_sku(ref, kind=kind)

    async def get_listings(
        self, refs: Sequence[ListingRef], *, kind: CallKind = CallKind.LIVE
    ) -> Mapping[ListingRef, Listing]:
        # Back Market has no batch read: one GET each, within the account's budget.
        found: dict[ListingRef, Listing] = {}
        for ref in refs:
            try:
                found[ref] = await self.get_listing(ref, kind=kind)
            except NotFound:
                continue
        return found

    async def set_quantity(
        self, ref: ListingRef, *, quantity: int, kind: CallKind = CallKind.LIVE
    ) -> Listing:
        reference = (ref.reference or "").strip()
        if not reference:
            # The update endpoint takes an id only: find the listing by its SKU first.
            reference = (await self._listing_by_sku(ref, kind=kind)).id
        return await self.client.update_listing(reference, quantity=quantity, kind=kind)

    async def read_order_lines(
        self, *, since: datetime, by: OrderTime = "changed", kind: CallKind = CallKind.WATCHER
    ) -> AsyncIterator[OrderLinesPage]:
        pages = cast(
            AsyncGenerator[OrderPage, None],
            self.client.iter_order_pages(
                modified_since=since if by == "changed" else None,
                created_since=since if by == "created" else None,
                kind=kind,
            ),
        )
        async with aclosing(pages) as arrivals:
            async for page in arrivals:
                changes = [order.modified_at for order in page.orders if order.modified_at]
                yield OrderLinesPage(
                    lines=[line for order in page.orders for line in order.lines],
                    orders=len(page.orders),
                    requests=page.requests,
                    newest_change=max(changes, default=None),
                )

    def budget_snapshot(self) -> BudgetSnapshot:
        return self.client.budget_snapshot()

    def paused_for(self) -> float:
        return self.client.paused_for()

    @property
    def requests_total(self) -> int:
        return self.client.requests_total

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _listing_by_sku(self, ref: ListingRef, *, kind: CallKind) -> Listing:
        sku = (ref.sku or "").strip()
        if not sku:
            raise NotFound(
                f"no listing reference and no SKU for {ref}", endpoint=ENDPOINT_GET_LISTING
            )
        return await self.client.get_listing_detail(sku=sku, kind=kind)


__all__ = ["BackMarketMarketplace", "client_settings"]
