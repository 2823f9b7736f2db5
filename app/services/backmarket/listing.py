"""A Back Market listing as stock sees it, one page of a market's listings, and the paths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from app.services.backmarket.answers import as_int
from app.services.backmarket.errors import BadResponse

LISTINGS_PATH = "/ws/listings"
ENDPOINT_LIST_LISTINGS = "GET /ws/listings"
ENDPOINT_GET_LISTING = "GET /ws/listings/{listingId}"
ENDPOINT_UPDATE_LISTING = "POST /ws/listings/{listingId}"


@dataclass(frozen=True, slots=True)
class Listing:
    """The part of a Back Market listing that stock needs; `quantity` is global to all markets."""

    id: str
    listing_id: int | None
    sku: str | None
    quantity: int
    publication_state: int | None

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Listing:
        """Raise BadResponse when `id` or `quantity` is missing or unusable.

        `quantity` is an integer of at least 0, or a string of one ("12": the update endpoint
        takes both); a float, a negative number, a bool or null is unusable. The optional fields
        are read leniently (None when absent or not an integer) so that one odd field does not
        lose the listing; it still matches by its UUID. Prices are not read at all.
        """
        if not isinstance(body, Mapping):
            raise BadResponse(f"a listing must be a JSON object, got {type(body).__name__}")
        listing_uuid = body.get("id")
        if not isinstance(listing_uuid, str) or not listing_uuid.strip():
            legacy_id = as_int(body.get("listing_id"))
            named = "listing" if legacy_id is None else f"listing with listing_id {legacy_id}"
            raise BadResponse(f"{named} has no usable 'id' ({type(listing_uuid).__name__})")
        raw_quantity = body.get("quantity")
        quantity = as_int(raw_quantity)
        if quantity is None or quantity < 0:
            shown = repr(raw_quantity)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise BadResponse(
                f"listing {listing_uuid} has no usable 'quantity' ({shown}): "
                "a stock is an integer of at least 0"
            )
        sku = body.get("sku")
        return cls(
            id=listing_uuid.strip(),
            listing_id=as_int(body.get("listing_id")),
            sku=None if sku is None else str(sku),
            quantity=quantity,
            publication_state=as_int(body.get("publication_state")),
        )


@dataclass(frozen=True, slots=True)
class ListingPage:
    """One page of one market; `fetched_at` is when its successful request was sent."""

    market: str
    page: int
    fetched_at: datetime
    listings: list[Listing]
    count: int
    pages_expected: int
    requests: int
    # Listings of this page already read on an earlier page of the same feed (the catalogue
    # shifted between pages); they are not in `listings` again.
    repeated: list[str] = field(default_factory=list)


def listing_path(listing_ref: str | int) -> str:
    """The path of one listing, by UUID or integer listing_id."""
    if isinstance(listing_ref, bool) or not isinstance(listing_ref, str | int):
        raise TypeError("listing_ref must be a listing UUID or an integer listing_id")
    ref = str(listing_ref).strip()
    if not ref:
        raise ValueError("listing_ref is empty")
    # Quoting keeps a stray '/' or '?' in a reference from reaching another endpoint.
    return f"{LISTINGS_PATH}/{quote(ref, safe='')}"
