"""Pages in, batches out: the market fetchers and the run's reading of what they bring.

Each market's pages are fetched concurrently by the client (within its shared request budget),
markets concurrently too. Pages go through a bounded queue to the one writer, grouped into
batches of `settings.sync_batch_size` listings (or whatever has arrived when the queue runs
dry). Memory holds a batch, a few queued pages and, with several markets, one entry per
listing to apply each listing once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeAlias, cast

from prometheus_client import Gauge

from app.services.marketplace import (
    IncompleteFeed,
    Listing,
    ListingPage,
    Marketplace,
    MarketplaceError,
)
from app.services.sync.clock import SnapshotClock
from app.services.sync.matching import Observed
from app.services.sync.runs import Run

PAGE_SIZE = 50
# Pages waiting for the writer; fetches pause beyond this, so memory stays bounded.
QUEUE_PAGES = 16

QUEUE_DEPTH = Gauge(
    "bulk_sync_page_queue_depth",
    f"Pages fetched and waiting for the bulk sync's writer (at most {QUEUE_PAGES}); "
    "full means the writer is the bottleneck, empty means Back Market is.",
)


@dataclass(slots=True)
class MarketDone:
    """The end of one market's feed; `error` is what stopped it early, if anything did."""

    market: str
    error: BaseException | None = None


PageQueue: TypeAlias = asyncio.Queue[ListingPage | MarketDone]


async def fetch_market(marketplace: Marketplace, market: str, queue: PageQueue) -> None:
    """Feed one feed's pages to the writer; the end of the feed is a MarketDone."""
    error: BaseException | None = None
    try:
        # Closing the generator at once cancels its page fetches when this task is cancelled.
        feed = cast(
            AsyncGenerator[ListingPage, None],
            marketplace.iter_listing_pages(market),
        )
        async with aclosing(feed) as pages:
            async for page in pages:
                await queue.put(page)
                QUEUE_DEPTH.set(queue.qsize())
    except MarketplaceError as exc:
        error = exc
    except Exception as exc:
        # A bug must reach the writer, not leave it waiting for this market forever.
        error = exc
    await queue.put(MarketDone(market, error))


class PageIntake:
    """Records each page and each market's end on the run, and groups listings into batches."""

    def __init__(
        self, run: Run, *, markets: list[str], clock: SnapshotClock, batch_size: int
    ) -> None:
        self.run = run
        self.markets = markets
        self.clock = clock
        self.batch_size = batch_size
        # Quantity is global: with several markets each listing is applied once, and the
        # quantity first seen is kept to notice markets that disagree.
        self.seen: dict[str, tuple[int, str]] | None = {} if len(markets) > 1 else None
        self.market_calls: dict[str, int] = dict.fromkeys(markets, 0)
        self.market_pages_expected: dict[str, int] = dict.fromkeys(markets, 0)

    async def batches(self, queue: PageQueue) -> AsyncGenerator[list[Observed], None]:
        """Batches until every market has ended; a fetcher's crash is raised after its batch.

        An empty batch is yielded too: writing it saves the run's progress (a market's end).
        """
        pending: list[Observed] = []
        markets_left = len(self.markets)
        while markets_left:
            item = await queue.get()
            QUEUE_DEPTH.set(queue.qsize())
            if isinstance(item, MarketDone):
                markets_left -= 1
                crash = self.market_done(item)
                if crash is not None:
                    # Keep what was read before the fetcher broke, then fail the run.
                    yield pending
                    raise crash
            else:
                pending.extend(self.accept_page(item))
            # Write a full batch at once; otherwise write whatever arrived when the writer
            # would idle anyway, so progress stays live when pages come slowly.
            if len(pending) >= self.batch_size or queue.empty():
                yield pending
                pending = []

    def accept_page(self, page: ListingPage) -> list[Observed]:
        market = self.run.markets[page.market]
        market["status"] = "running"
        market["pages"] += 1
        market["listings"] += len(page.listings)
        market["count"] = page.count
        market["pages_expected"] = max(market.get("pages_expected") or 0, page.pages_expected or 0)
        self.market_pages_expected[page.market] = market["pages_expected"]
        self.market_calls[page.market] += page.requests
        self.run.pages_fetched += 1
        self.run.pages_expected = sum(self.market_pages_expected.values())
        self.run.api_calls = sum(self.market_calls.values())
        if page.repeated:
            self._record_repeats(page)

        cutoff = self.clock.cutoff(page.fetched_at)
        accepted: list[Observed] = []
        for listing in page.listings:
            if self.seen is not None:
                first = self.seen.get(listing.id)
                if first is not None:
                    if first[0] != listing.quantity:
                        self._record_disagreement(listing, first=first, market=page.market)
                    continue
                self.seen[listing.id] = (listing.quantity, page.market)
            accepted.append(Observed(listing, cutoff))
        self.run.listings_seen += len(accepted)
        return accepted

    def _record_repeats(self, page: ListingPage) -> None:
        market = self.run.markets[page.market]
        market["repeated_listings"] = market.get("repeated_listings", 0) + len(page.repeated)
        self.run.add_error(
            {
                "kind": "repeated_listing",
                "market": page.market,
                "page": page.page,
                "listings": page.repeated[:10],
                "message": (
                    f"{len(page.repeated)} listings on page {page.page} had been read on an "
                    "earlier page already (the catalogue shifted during the read); each is "
                    "applied once, as first read"
                ),
            }
        )

    def _record_disagreement(
        self, listing: Listing, *, first: tuple[int, str], market: str
    ) -> None:
        first_quantity, first_market = first
        for name in (first_market, market):
            entry = self.run.markets[name]
            entry["quantity_disagreements"] = entry.get("quantity_disagreements", 0) + 1
        self.run.add_error(
            {
                "kind": "quantity_disagreement",
                "listing": listing.id,
                "listing_id": listing.listing_id,
                "quantities": {first_market: first_quantity, market: listing.quantity},
                "applied": first_quantity,
                "message": (
                    f"listing {listing.listing_id or listing.id} has quantity {first_quantity} "
                    f"on {first_market} but {listing.quantity} on {market}; "
                    f"{first_quantity} was applied"
                ),
            }
        )

    def market_done(self, done: MarketDone) -> BaseException | None:
        """Record how a market's feed ended; an error that is not Back Market's is returned."""
        market = self.run.markets[done.market]
        error = done.error
        if error is None:
            market["status"] = "completed"
            if not market.get("pages_expected"):
                # A cursor feed (Refurbed) announces no page count: read whole, it had as many
                # pages as were read.
                market["pages_expected"] = market["pages"]
                self.market_pages_expected[done.market] = market["pages"]
                self.run.pages_expected = sum(self.market_pages_expected.values())
            return None
        if isinstance(error, IncompleteFeed):
            market["status"] = "partial"
            self.market_calls[done.market] = max(self.market_calls[done.market], error.attempts)
            for page_number, page_error in sorted(error.failed_pages.items()):
                self.run.add_error(
                    {
                        "kind": "page_failed",
                        "market": done.market,
                        "page": page_number,
                        "error": type(page_error).__name__,
                        "message": str(page_error),
                    }
                )
            for page_number, reasons in sorted(error.unusable.items()):
                for reason in reasons:
                    self.run.add_error(
                        {
                            "kind": "unusable_listing",
                            "market": done.market,
                            "page": page_number,
                            "message": reason,
                        }
                    )
            if not error.failed_pages and not error.unusable:
                self.run.add_error(
                    {
                        "kind": "incomplete_feed",
                        "market": done.market,
                        "error": type(error).__name__,
                        "message": str(error),
                    }
                )
        elif isinstance(error, MarketplaceError):
            # The first page failed: nothing of this market was read.
            market["status"] = "failed"
            self.market_calls[done.market] += error.attempts
            self.run.add_error(
                {
                    "kind": "market_failed",
                    "market": done.market,
                    "error": type(error).__name__,
                    "message": str(error),
                }
            )
        else:
            market["status"] = "failed"
            return error
        market["error"] = str(error)
        self.run.api_calls = sum(self.market_calls.values())
        return None
