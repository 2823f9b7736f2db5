"""Refurbed offers as stock sees them: one `Offer` read into a neutral `Listing`, the identifier of
a live call, and the bodies of ListOffers pages.

An offer's `id` is an int64 that travels as a JSON string (`"123"`); an integer is accepted too,
and ids are always sent as strings. `stock` is global to the offer (not per market).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.services.marketplace.errors import BadResponse
from app.services.marketplace.types import Listing, ListingRef
from app.services.refurbed.answers import UnexpectedShape, as_int

# OfferState, by its proto number; the number is what `Listing.state` holds.
OFFER_STATES = {
    "UNSPECIFIED": 0,
    "OK": 1,
    "UNVERIFIED": 2,
    "SUBMITTED": 3,
    "PENDING_REVIEW": 4,
    "REJECTED": 5,
}


def offer_id_of(value: object) -> int | None:
    """A usable offer id (a positive int64, as a string or an integer); else None."""
    number = as_int(value)
    return number if number is not None and number > 0 else None


def listing_of_offer(body: object) -> Listing:
    """Raise BadResponse when the offer has no usable `id` or `stock`.

    `stock` must be an integer of at least 0 (an integer string is taken too); the other fields
    are read leniently so one odd field does not lose the offer. An empty SKU is no SKU.
    """
    if not isinstance(body, Mapping):
        raise BadResponse(f"an offer must be a JSON object, got {type(body).__name__}")
    offer_id = offer_id_of(body.get("id"))
    if offer_id is None:
        raise BadResponse(f"offer has no usable 'id' ({_shown(body.get('id'))})")
    stock = as_int(body.get("stock"))
    if stock is None or stock < 0:
        raise BadResponse(
            f"offer {offer_id} has no usable 'stock' ({_shown(body.get('stock'))}): "
            "a stock is an integer of at least 0"
        )
    sku = body.get("sku")
    state = body.get("state")
    return Listing(
        id=str(offer_id),
        sku=(sku.strip() or None) if isinstance(sku, str) else None,
        quantity=stock,
        state=OFFER_STATES.get(state) if isinstance(state, str) else as_int(state),
    )


def offer_in_answer(body: object) -> Listing:
    """The offer of a GetOffer or UpdateOffer answer `{"offer": Offer}`, or UnexpectedShape."""
    if not isinstance(body, Mapping):
        raise UnexpectedShape("the body is not a JSON object")
    if "offer" not in body:
        raise UnexpectedShape("the body has no 'offer'")
    try:
        return listing_of_offer(body["offer"])
    except BadResponse as exc:
        raise UnexpectedShape(str(exc)) from None


def identifier(ref: ListingRef) -> dict[str, str]:
    """`OfferIdentifier`: the stored offer id when there is one, else the SKU."""
    reference = (ref.reference or "").strip()
    if reference:
        offer_id = offer_id_of(reference)
        if offer_id is None:
            raise ValueError(f"{reference!r} is not a Refurbed offer id")
        return {"id": str(offer_id)}
    return {"sku": (ref.sku or "").strip()}


@dataclass(frozen=True, slots=True)
class OfferPage:
    """One ListOffers answer: the usable offers, why the others were left out, the cursor on."""

    listings: list[Listing]
    has_more: bool
    # The id of the page's last offer: where the next page starts.
    last_id: int | None
    unusable: list[str] = field(default_factory=list)


def offer_page(body: Any, *, page: int, starting_after: int | None) -> OfferPage:
    """A ListOffers body `{"offers", "has_more"}`, or UnexpectedShape.

    A page that says more follow but cannot lead there (no offers, or a last id not past the
    cursor it was asked with) is a wrong shape: following it would loop.
    """
    if not isinstance(body, Mapping):
        raise UnexpectedShape("the body is not a JSON object")
    offers = body.get("offers")
    if not isinstance(offers, list):
        raise UnexpectedShape("the body has no 'offers' list")
    has_more = body.get("has_more")
    if not isinstance(has_more, bool):
        raise UnexpectedShape("the body has no boolean 'has_more'")
    listings: list[Listing] = []
    unusable: list[str] = []
    for index, offer in enumerate(offers):
        try:
            listings.append(listing_of_offer(offer))
        except BadResponse as exc:
            # One offer without a usable id or stock must not cost the other 99 of its page.
            unusable.append(f"page {page} offer {index}: {exc}")
    last = offers[-1] if offers else None
    last_id = offer_id_of(last.get("id")) if isinstance(last, Mapping) else None
    if has_more:
        if not offers:
            raise UnexpectedShape("'has_more' is true but the page has no offers")
        if last_id is None:
            raise UnexpectedShape("'has_more' is true but the last offer has no usable id")
        if starting_after is not None and last_id <= starting_after:
            raise UnexpectedShape(
                f"'has_more' is true but the last offer ({last_id}) is not past the cursor "
                f"({starting_after})"
            )
    return OfferPage(listings=listings, has_more=has_more, last_id=last_id, unusable=unusable)


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
