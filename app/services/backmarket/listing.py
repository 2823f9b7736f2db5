"""A Back Market listing body read as the neutral `Listing`, and the listing paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from app.services.backmarket.answers import as_int
from app.services.backmarket.errors import BadResponse
from app.services.marketplace.types import Listing, ListingPage

__all__ = ["Listing", "ListingPage", "listing_from_api", "listing_path"]

LISTINGS_PATH = "/ws/listings"
ENDPOINT_LIST_LISTINGS = "GET /ws/listings"
ENDPOINT_GET_LISTING = "GET /ws/listings/{listingId}"
ENDPOINT_UPDATE_LISTING = "POST /ws/listings/{listingId}"
LISTING_DETAIL_PATH = "/ws/listings/detail"
ENDPOINT_LISTING_DETAIL = "GET /ws/listings/detail"


def listing_from_api(body: Mapping[str, Any]) -> Listing:
    """The listing a Back Market body holds; BadResponse when `id` or `quantity` is unusable.

    `quantity` is an integer of at least 0, or a string of one ("12": the update endpoint takes
    both); a float, a negative number, a bool or null is unusable. The optional fields are read
    leniently (None when absent or not an integer) so that one odd field does not lose the
    listing; it still matches by its UUID. Prices are not read at all. Its `state` is
    `publication_state`.
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
    return Listing(
        id=listing_uuid.strip(),
        listing_id=as_int(body.get("listing_id")),
        sku=None if sku is None else str(sku),
        quantity=quantity,
        state=as_int(body.get("publication_state")),
    )


def listing_path(listing_ref: str | int) -> str:
    """The path of one listing, by UUID or integer listing_id."""
    if isinstance(listing_ref, bool) or not isinstance(listing_ref, str | int):
        raise TypeError("listing_ref must be a listing UUID or an integer listing_id")
    ref = str(listing_ref).strip()
    if not ref:
        raise ValueError("listing_ref is empty")
    # Quoting keeps a stray '/' or '?' in a reference from reaching another endpoint.
    return f"{LISTINGS_PATH}/{quote(ref, safe='')}"
