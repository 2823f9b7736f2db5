"""The neutral values every adapter answers with and every use case reads.

No marketplace's habits here: a page has no page size or total to be required, a feed is just a
name the adapter gives (Back Market: its Accept-Language markets; Refurbed: one feed), a
listing is found by the reference the service stored, else by its SKU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal


@dataclass(frozen=True, slots=True)
class Listing:
    """A listing (Back Market) or offer (Refurbed) as stock needs it.

    `id` is the marketplace's own reference, the one `ListingRef.reference` takes back;
    `quantity` is the stock the marketplace shows (global to its markets), at least 0; `state` is
    the marketplace's publication state code where it has one (only marketplace 1's is written to
    `variation.state`); `listing_id` is Back Market's integer listing id (None elsewhere).
    """

    id: str
    sku: str | None
    quantity: int
    state: int | None = None
    listing_id: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.quantity, bool) or self.quantity < 0:
            raise ValueError(f"listing {self.id}: quantity must be an integer of at least 0")


@dataclass(frozen=True, slots=True)
class ListingRef:
    """How a live call names one listing: the stored reference, else the SKU.

    A variation synced before has its `reference` (the listing's or offer's `id`); one never
    synced is looked up by its SKU where the marketplace can do that.
    """

    reference: str | None = None
    sku: str | None = None

    def __post_init__(self) -> None:
        if not (self.reference or "").strip() and not (self.sku or "").strip():
            raise ValueError("a listing reference needs a reference or a SKU")

    def __str__(self) -> str:
        return (self.reference or "").strip() or f"sku {self.sku!r}"


@dataclass(frozen=True, slots=True)
class ListingPage:
    """One page of one feed, as it arrived; `fetched_at` is when its successful request was sent.

    `page` counts the feed's pages in reading order from 1 (a page-numbered feed may yield them
    out of order). `count` and `pages_expected` are what the feed announced of its size, None when
    it announces nothing (a cursor feed ends when it says so). Whether the feed was read whole is
    known at its end: the iterator raises IncompleteFeed after the last page when it was not.
    """

    feed: str
    page: int
    fetched_at: datetime
    listings: list[Listing]
    requests: int
    count: int | None = None
    pages_expected: int | None = None
    # Listings of this page already read on an earlier page of the same feed (the catalogue
    # shifted between pages); they are not in `listings` again.
    repeated: list[str] = field(default_factory=list)

    @property
    def market(self) -> str:
        """Back Market's name for a feed (an Accept-Language market)."""
        return self.feed


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of an order: `quantity` units of one listing. Times are naive UTC.

    `listing_ref` is the listing's or offer's `id` where the feed names it, `listing_id` Back
    Market's integer id, `sku` the listing's SKU. `state` is the marketplace's own code for the
    line's state: seeing a line again in another state is a new event. `sold` says whether the
    line, in that state, is a sale that lowered the stock (False: cancelled, refunded, returned).
    `order_changed_at` is the order's time the feed is read by (Back Market: modified, Refurbed:
    released), the watcher's watermark.
    """

    id: int
    order_id: int
    listing_id: int | None
    sku: str | None
    quantity: int
    state: int
    created_at: datetime | None
    listing_ref: str | None = None
    sold: bool = True
    order_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderLinesPage:
    """The lines of one page of orders; `newest_change` is the newest `order_changed_at` of
    the page's orders (lines or not), `requests` the calls it took."""

    lines: list[OrderLine]
    orders: int
    requests: int
    newest_change: datetime | None = None


# Which of an order's times `read_order_lines` filters by: when it last changed (the watcher),
# or when it was created (the sales made during an addition).
OrderTime = Literal["changed", "created"]
