"""Sales that an addition's own update may have undone: found in the orders feed and claimed.

Back Market has no compare-and-set and no relative update. Between add-quantity's read and the
arrival of its update a customer's order lowers the quantity, and the update, computed from the
read, puts the sold units back on sale. So right after the update is answered, still under the
variation's lock and the Idempotency-Key, `GET /ws/orders?date_creation=<window start>` is read
and this listing's lines created inside the window are claimed (`sales.claim_for_compensation`,
which lets each line be subtracted once, here or by the orders watcher); the addition then
subtracts their units with one more update.

Every line state counts, and the window runs from a margin before the read was sent to a margin
after the update was answered: a line cancelled since had its decrement overwritten all the same,
and a sale during the read's own flight may or may not have been seen by it. In doubt the units
are subtracted, because an unsold unit listed late costs less than an oversell.

Orders Back Market does not list yet (state 0, payment being verified) are not in the feed; the
addition's window is recorded (`sales.record_addition`) and the watcher subtracts them later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services import marketplace as mp
from app.services import sales

log = logging.getLogger(__name__)

SALES_DURING_UPDATE = Counter(
    "stock_sync_sales_during_update_total",
    "Order lines sold during an addition's update, by what became of them.",
    ["outcome"],
)


@dataclass(frozen=True, slots=True)
class SaleWindow:
    """When the addition's read was sent and its (last) update answered, naive UTC."""

    read_sent_at: datetime
    answered_at: datetime

    @property
    def start(self) -> datetime:
        return self.read_sent_at - sales.SALE_WINDOW_MARGIN

    @property
    def end(self) -> datetime:
        return self.answered_at + sales.SALE_WINDOW_MARGIN

    def until(self, answered_at: datetime) -> SaleWindow:
        """The window of one more update, answered at `answered_at`, sent from the same read."""
        return replace(self, answered_at=answered_at)


@dataclass(frozen=True, slots=True)
class SoldLine:
    line: mp.OrderLine
    order_modified_at: datetime | None


@dataclass(frozen=True, slots=True)
class ListingIdentity:
    """What an order line names a listing by: Back Market's integer id, else the listing's own
    id (a Refurbed offer id), else its SKU."""

    listing_id: int | None
    reference: str
    skus: frozenset[str]

    @classmethod
    def of(
        cls, listing: mp.Listing, *, variation_sku: str | None, reference_id: str | None
    ) -> ListingIdentity:
        """`reference_id`: the variation's Back Market listing id, only for marketplace 1."""
        listing_id = listing.listing_id
        if listing_id is None and reference_id and reference_id.strip().isdigit():
            listing_id = int(reference_id.strip())
        skus = frozenset(sku for sku in (listing.sku, variation_sku) if sku)
        return cls(listing_id=listing_id, reference=listing.id, skus=skus)

    def owns(self, line: mp.OrderLine) -> bool:
        if line.listing_id is not None and self.listing_id is not None:
            return line.listing_id == self.listing_id
        if line.listing_id is None and self.listing_id is None and line.listing_ref:
            return line.listing_ref == self.reference
        return line.sku is not None and line.sku in self.skus


async def read_sold_lines(
    marketplace: mp.Marketplace, *, identity: ListingIdentity, window: SaleWindow
) -> list[SoldLine] | None:
    """The listing's order lines created since the window opened; None when the feed failed.

    A failure does not fail the addition (its update is applied): the window is recorded all
    the same and the orders watcher subtracts those lines once it sees them.
    """
    found: list[SoldLine] = []
    try:
        async for page in marketplace.read_order_lines(
            since=window.start, by="created", kind=mp.CallKind.LIVE
        ):
            found.extend(
                SoldLine(line=line, order_modified_at=line.order_changed_at)
                for line in page.lines
                if identity.owns(line)
            )
    except mp.MarketplaceError as exc:
        SALES_DURING_UPDATE.labels("orders_read_failed").inc()
        log.warning(
            "listing %s: the orders read after an addition failed; sales made during it are "
            "left to the orders watcher: %s",
            identity.listing_id,
            exc,
        )
        return None
    return found


async def claim_sold_lines(
    conn: AsyncConnection,
    found: Sequence[SoldLine],
    *,
    variation_id: int,
    marketplace_id: int,
    window: SaleWindow,
    at: datetime,
    by: str,
) -> list[mp.OrderLine]:
    """Claim the lines this change's update overwrote, as claimed `by` it (its change type);
    those not claimed by anyone yet.

    The lines created inside the window first. Only when one of them is claimed does a second
    update follow, and since that update is computed from the first one's answer it overwrites
    the later sales the feed showed too: those are claimed with them.
    """
    inside = [sold for sold in found if _created_inside(sold.line, window)]
    later = [sold for sold in found if sold.line.created_at and sold.line.created_at > window.end]
    claimed = await _claim(
        conn, inside, variation_id=variation_id, marketplace_id=marketplace_id, at=at, by=by
    )
    if claimed:
        claimed += await _claim(
            conn, later, variation_id=variation_id, marketplace_id=marketplace_id, at=at, by=by
        )
    return claimed


def _created_inside(line: mp.OrderLine, window: SaleWindow) -> bool:
    # Without a creation time the feed's own filter is all there is: counted as inside.
    return line.created_at is None or window.start <= line.created_at <= window.end


async def _claim(
    conn: AsyncConnection,
    found: Sequence[SoldLine],
    *,
    variation_id: int,
    marketplace_id: int,
    at: datetime,
    by: str,
) -> list[mp.OrderLine]:
    if not found:
        return []
    events = [
        sales.LineEvent(
            line=sold.line, order_modified_at=sold.order_modified_at, variation_id=variation_id
        )
        for sold in found
    ]
    claimed = await sales.claim_for_compensation(
        conn, events, marketplace_id=marketplace_id, by=by, at=at
    )
    return [event.line for event in claimed]


@dataclass(frozen=True, slots=True)
class PendingSubtraction:
    """An applied addition whose sold units are still to be subtracted.

    Kept in the Idempotency-Key's row until the key is settled, so that a retry after a crash
    or an unknown outcome subtracts (or confirms) instead of adding again.
    """

    previous_quantity: int
    added: int
    units: int
    line_ids: tuple[int, ...]

    def as_response(self) -> dict[str, Any]:
        return {
            "pending_subtraction": {
                "previous_quantity": self.previous_quantity,
                "added": self.added,
                "units": self.units,
                "line_ids": list(self.line_ids),
            }
        }

    @classmethod
    def from_response(cls, response: dict[str, Any] | None) -> PendingSubtraction | None:
        pending = (response or {}).get("pending_subtraction")
        if not isinstance(pending, dict):
            return None
        return cls(
            previous_quantity=int(pending["previous_quantity"]),
            added=int(pending["added"]),
            units=int(pending["units"]),
            line_ids=tuple(int(line_id) for line_id in pending["line_ids"]),
        )
