"""The merchant's offers as Refurbed holds them: one per SKU, stock global to the offer.

Generated offer ``i`` (0-based): ``id = OFFER_ID_BASE + OFFER_ID_STRIDE * i`` (int64,
not contiguous, so a client cannot mistake an index or a count for an id) and, unless
the caller gives SKUs, ``sku = "SKU-%07d" % (i + 1)``: the Back Market simulator's
pattern, so the two simulators hold the same SKUs for the same index. Stock, state,
grading and prices come from the seed.

Offers are kept as objects in a dict with their ids in a sorted list: the cursor
pagination of ``ListOffers`` walks that list. Not thread-safe; the state serialises
access.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

OFFER_ID_BASE: Final = 70_000_000
OFFER_ID_STRIDE: Final = 13
SKU_PREFIX: Final = "SKU-"
MAX_SKU_LENGTH: Final = 256
# int64 in the proto.
MAX_INT64: Final = 2**63 - 1
# stock is a uint32.
MAX_STOCK: Final = 2**32 - 1

OFFER_STATES: Final = ("OK", "UNVERIFIED", "SUBMITTED", "PENDING_REVIEW", "REJECTED")
OFFER_GRADINGS: Final = ("A", "B", "C", "AA")
OFFER_TAXATIONS: Final = ("GROSS", "MARGINAL")
# (market code, market name) of the site markets an offer is priced on, all in EUR.
SITE_MARKETS: Final = (("at", "Austria"), ("de", "Germany"), ("fr", "France"), ("it", "Italy"))
SHIPPING_PROFILE_ID: Final = 4_001
SHIPPING_PROFILE_NAME: Final = "Standard EU"
CATALOGUE_CREATED_AT: Final = datetime(2023, 1, 2, 9, 0, tzinfo=UTC)

_INSTANCES: Final = (
    ("iPhone 13 128 GB Midnight", 430.0),
    ("iPhone 12 64 GB Blue", 330.0),
    ("iPhone 14 Pro 256 GB Silver", 820.0),
    ("Galaxy S22 128 GB Black", 380.0),
    ("Pixel 7 128 GB Snow", 300.0),
    ("iPad Air (2022) 64 GB Blue", 450.0),
    ("MacBook Air M1 256 GB Gold", 690.0),
    ("Fairphone 4 128 GB Green", 360.0),
)
_INSTANCE_ID_BASE: Final = 880_000


def money(value: float | Decimal) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def format_timestamp(moment: datetime) -> str:
    """google.protobuf.Timestamp in JSON: RFC 3339 in UTC with a "Z"."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def check_sku(sku: str) -> None:
    """The document's rule: at most 256 characters, no leading or trailing whitespace."""
    if len(sku) > MAX_SKU_LENGTH:
        raise ValueError(f"sku must be at most {MAX_SKU_LENGTH} characters")
    if sku != sku.strip():
        raise ValueError("sku must not have leading or trailing whitespace")


@dataclass
class Offer:
    id: int
    sku: str
    stock: int
    state: str
    instance_id: int
    instance_name: str
    grading: str
    taxation: str
    reference_price: str
    reference_min_price: str | None
    created_at: datetime
    version: int = 1


class OfferStore:
    """Offers by id, in id order; SKUs unique (the empty SKU of old offers excepted)."""

    def __init__(self, *, size: int, seed: int, skus: Sequence[str] | None = None) -> None:
        if skus is not None and len(skus) != size:
            raise ValueError(f"{len(skus)} SKUs given for {size} offers")
        self._offers: dict[int, Offer] = {}
        self._ids: list[int] = []
        self._id_by_sku: dict[str, int] = {}
        rng = random.Random(f"{seed}:offers")
        for index in range(size):
            self._insert(
                _generated_offer(
                    index, rng, sku=skus[index] if skus is not None else _default_sku(index)
                )
            )

    def __len__(self) -> int:
        return len(self._ids)

    def _insert(self, offer: Offer) -> None:
        check_sku(offer.sku)
        if offer.id in self._offers:
            raise ValueError(f"an offer with id {offer.id} exists")
        if offer.sku and offer.sku in self._id_by_sku:
            raise ValueError(f"an offer with sku {offer.sku!r} exists")
        self._offers[offer.id] = offer
        bisect.insort(self._ids, offer.id)
        if offer.sku:
            self._id_by_sku[offer.sku] = offer.id

    # -- lookup ------------------------------------------------------------------

    def by_id(self, offer_id: int) -> Offer | None:
        return self._offers.get(offer_id)

    def by_sku(self, sku: str) -> Offer | None:
        found = self._id_by_sku.get(sku)
        return None if found is None else self._offers[found]

    def resolve(self, ref: str | int) -> Offer | None:
        """An offer named by id (int or digits) or by SKU; an id wins over a SKU of digits."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            return self.by_id(ref)
        text = str(ref)
        if text.isdigit():
            found = self.by_id(int(text))
            if found is not None:
                return found
        return self.by_sku(text)

    def in_id_order(
        self, *, after: int | None = None, before: int | None = None, descending: bool = False
    ) -> Iterator[Offer]:
        """Offers with ids strictly between ``after`` and ``before``, ascending unless told."""
        start = 0 if after is None else bisect.bisect_right(self._ids, after)
        stop = len(self._ids) if before is None else bisect.bisect_left(self._ids, before)
        ids = self._ids[start:stop]
        for offer_id in reversed(ids) if descending else ids:
            yield self._offers[offer_id]

    # -- changes -----------------------------------------------------------------

    def set_stock(self, offer: Offer, stock: int) -> None:
        if not 0 <= stock <= MAX_STOCK:
            raise ValueError(f"stock must be within [0, {MAX_STOCK}]")
        offer.stock = stock

    def add(
        self,
        *,
        sku: str,
        id: int | None = None,
        stock: int = 0,
        state: str = "OK",
        instance_name: str | None = None,
        grading: str = "A",
        reference_price: str = "199.00",
        created_at: datetime,
    ) -> Offer:
        if state not in OFFER_STATES:
            raise ValueError(f"state must be one of {list(OFFER_STATES)}")
        if grading not in OFFER_GRADINGS:
            raise ValueError(f"grading must be one of {list(OFFER_GRADINGS)}")
        if not 0 <= stock <= MAX_STOCK:
            raise ValueError(f"stock must be within [0, {MAX_STOCK}]")
        offer_id = id if id is not None else self._next_id()
        if not 1 <= offer_id <= MAX_INT64:
            raise ValueError("id must be a positive int64")
        offer = Offer(
            id=offer_id,
            sku=sku,
            stock=stock,
            state=state,
            instance_id=_INSTANCE_ID_BASE,
            instance_name=instance_name or _INSTANCES[0][0],
            grading=grading,
            taxation="MARGINAL",
            reference_price=money(Decimal(reference_price)),
            reference_min_price=None,
            created_at=created_at,
        )
        self._insert(offer)
        return offer

    def _next_id(self) -> int:
        last = self._ids[-1] if self._ids else OFFER_ID_BASE - OFFER_ID_STRIDE
        return last + OFFER_ID_STRIDE

    def remove(self, offer: Offer) -> None:
        del self._offers[offer.id]
        self._ids.pop(bisect.bisect_left(self._ids, offer.id))
        if offer.sku:
            self._id_by_sku.pop(offer.sku, None)


def _default_sku(index: int) -> str:
    return f"{SKU_PREFIX}{index + 1:07d}"


def _generated_offer(index: int, rng: random.Random, *, sku: str) -> Offer:
    instance = rng.randrange(len(_INSTANCES))
    name, base_price = _INSTANCES[instance]
    roll = rng.random()
    # Mostly live offers; a few still in review or never verified.
    state = "OK" if roll < 0.94 else "UNVERIFIED" if roll < 0.97 else "PENDING_REVIEW"
    grading = OFFER_GRADINGS[rng.randrange(len(OFFER_GRADINGS))]
    price = base_price * (0.85 + rng.random() * 0.3)
    stock_roll = rng.random()
    stock = (
        0 if stock_roll < 0.12 else rng.randint(1, 10) if stock_roll < 0.85 else rng.randint(11, 40)
    )
    return Offer(
        id=OFFER_ID_BASE + OFFER_ID_STRIDE * index,
        sku=sku,
        stock=stock,
        state=state,
        instance_id=_INSTANCE_ID_BASE + instance,
        instance_name=name,
        grading=grading,
        taxation=OFFER_TAXATIONS[rng.randrange(len(OFFER_TAXATIONS))],
        reference_price=money(price),
        reference_min_price=money(price * 0.9) if rng.random() < 0.5 else None,
        created_at=CATALOGUE_CREATED_AT + timedelta(minutes=index),
    )


def render_offer(offer: Offer) -> dict[str, Any]:
    """The `Offer` definition as JSON: int64 as strings, unset optional fields left out."""
    offer_id = str(offer.id)
    market_prices = []
    for code, name in SITE_MARKETS:
        market_price: dict[str, Any] = {
            "offer_id": offer_id,
            "market_code": code,
            "market_name": name,
            "is_site_market": True,
            "is_calculated": True,
            "currency_code": "EUR",
            "price": offer.reference_price,
            "site_market_currency_code": "EUR",
            "site_market_price": offer.reference_price,
            # "not shown to customers (e.g. ... is out of stock, is not verified, ...)"
            "visibility": "FULL" if offer.stock > 0 and offer.state == "OK" else "NONE",
        }
        if offer.reference_min_price is not None:
            market_price["min_price"] = offer.reference_min_price
            market_price["site_market_min_price"] = offer.reference_min_price
        market_prices.append(market_price)
    rendered: dict[str, Any] = {
        "id": offer_id,
        "version": str(offer.version),
        "is_current": True,
        "created_at": format_timestamp(offer.created_at),
        "instance_id": str(offer.instance_id),
        "instance_name": offer.instance_name,
        "state": offer.state,
        "sku": offer.sku,
        "grading": offer.grading,
        "warranty": "M12",
        "stock": offer.stock,
        "shipping_profile_id": str(SHIPPING_PROFILE_ID),
        "shipping_profile_name": SHIPPING_PROFILE_NAME,
        "taxation": offer.taxation,
        "real_taxation": offer.taxation,
        "reference_currency_code": "EUR",
        "reference_price": offer.reference_price,
        "set_market_prices": [],
        "calculated_market_prices": market_prices,
    }
    if offer.reference_min_price is not None:
        rendered["reference_min_price"] = offer.reference_min_price
    return rendered
