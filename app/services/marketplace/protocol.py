"""`Marketplace`: the few operations the service needs from any marketplace.

An adapter (Back Market in `app.services.backmarket`, Refurbed in `app.services.refurbed`) keeps
its vendor's quirks inside: auth scheme, paging style, error bodies, rate-limit headers, its own
request budget. It answers with the neutral types of `types` and raises the errors of `errors`.
Every call of one adapter shares that adapter's request budget, and nothing else: one account's
429s or slowness never hold up another's calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from app.services.marketplace.budget import BudgetSnapshot, CallKind
from app.services.marketplace.types import (
    Listing,
    ListingPage,
    ListingRef,
    OrderLinesPage,
    OrderTime,
)

MarketplaceKind = Literal["backmarket", "refurbed"]


@runtime_checkable
class Marketplace(Protocol):
    """One configured marketplace account, built once by the wiring and shared by the process."""

    @property
    def id(self) -> int:
        """The `marketplace.id` this account's stock is stored under."""
        ...

    @property
    def kind(self) -> MarketplaceKind: ...

    @property
    def name(self) -> str:
        """`marketplace.name` to create the row with when it is missing."""
        ...

    @property
    def updates_per_hour(self) -> int:
        """The account's update budget: listing updates sent in any rolling hour at most."""
        ...

    @property
    def feeds(self) -> Sequence[str]:
        """The feeds a bulk sync reads, each once: Back Market's markets, Refurbed's one feed.

        A listing read in two feeds is the same listing (its quantity is global)."""
        ...

    def iter_listing_pages(self, feed: str) -> AsyncIterator[ListingPage]:
        """Every page of one feed as it arrives (bulk priority), then its completeness.

        The first page failing raises its own error. When the feed was not read whole (a later
        page failed, an item was unusable, fewer items than the feed announced), IncompleteFeed
        is raised after the last page that could be read. Close it (`contextlib.aclosing`) to
        stop early; fetches in flight are cancelled.
        """
        ...

    async def get_listing(self, ref: ListingRef, *, kind: CallKind = CallKind.LIVE) -> Listing:
        """One listing, by its stored reference, else by its SKU. NotFound when it is none."""
        ...

    async def get_listings(
        self, refs: Sequence[ListingRef], *, kind: CallKind = CallKind.LIVE
    ) -> Mapping[ListingRef, Listing]:
        """Several listings at once (as few calls as the marketplace allows). A listing that is
        not found is left out of the answer; any other failure raises."""
        ...

    async def set_quantity(
        self, ref: ListingRef, *, quantity: int, kind: CallKind = CallKind.LIVE
    ) -> Listing:
        """Set the listing's stock to `quantity` (absolute) and return the listing answered.

        OutcomeUnknown when the update may have been applied without a usable answer: never
        retried by the adapter; the caller reads back before deciding to send again.
        """
        ...

    def read_order_lines(
        self, *, since: datetime, by: OrderTime = "changed", kind: CallKind = CallKind.WATCHER
    ) -> AsyncIterator[OrderLinesPage]:
        """The lines of every order whose `by` time is at or after `since` (naive UTC), page
        after page; any failure is raised as it comes."""
        ...

    # -- what the status page shows -----------------------------------------------------------

    def budget_snapshot(self) -> BudgetSnapshot:
        """The request budget now: sends in the current window, the reserve, waiters by kind."""
        ...

    def paused_for(self) -> float:
        """Seconds left of the account-wide pause a 429 set (0 when not paused)."""
        ...

    @property
    def requests_total(self) -> int:
        """Requests sent so far, whatever their outcome."""
        ...

    async def aclose(self) -> None:
        """Close what the adapter opened (its HTTP client)."""
        ...
