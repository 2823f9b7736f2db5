"""The seller's catalogue as Back Market holds it, generated from a seed.

Built for a million listings: only what changes (quantity, publication state) is
kept per listing, in compact arrays; everything else (identity, title, per-market
prices) is recomputed from the seed when a listing is rendered, and lookups by
UUID, integer id or SKU invert the generation scheme instead of indexing a dict.

Scheme for generated listing ``i`` (0-based):
- ``listing_id = LISTING_ID_BASE + LISTING_ID_STRIDE * i`` (not contiguous, so a
  client cannot get away with confusing an index or a count with an id);
- ``sku = "SKU-%07d" % (i + 1)``;
- ``id`` is a version-4-shaped UUID whose low 62 bits are a seed-keyed bijection
  of ``i`` and whose high bits are a keyed hash: it looks random, decodes in O(1),
  and a UUID from another seed does not decode.

Listings added at run time (``add``) keep their identity in small dicts.
The store is not thread-safe; ``SimulatorState`` serialises access to it.
"""

from __future__ import annotations

import random
import re
import uuid
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from hashlib import blake2b
from typing import Any

from simulator.config import currency_of

LISTING_ID_BASE = 100_000
LISTING_ID_STRIDE = 7
SKU_PREFIX = "SKU-"
# array('i') holds a C int.
MAX_QUANTITY = 2**31 - 1
MAX_COMMENT_LENGTH = 500
MIN_WARRANTY_MONTHS = 12

PUBLICATION_MISSING_PRICE = 0
PUBLICATION_ONLINE = 2
PUBLICATION_OFFLINE = 3
PUBLICATION_STATES = frozenset(range(5))

# (grade, deprecated state code, price factor)
GRADES: tuple[tuple[str, int, float], ...] = (
    ("PREMIUM", 9, 1.12),
    ("EXCELLENT", 0, 1.0),
    ("VERY_GOOD", 1, 0.93),
    ("GOOD", 2, 0.87),
    ("FAIR", 3, 0.8),
    ("STALLONE", 4, 0.7),
)
GRADE_NAMES = frozenset(name for name, _, _ in GRADES)

_MODELS: tuple[tuple[str, float], ...] = (
    ("iPhone 13", 520.0),
    ("iPhone 12", 400.0),
    ("iPhone 14 Pro", 820.0),
    ("iPhone SE (2022)", 250.0),
    ("Galaxy S22", 430.0),
    ("Galaxy A54", 260.0),
    ("Pixel 7", 330.0),
    ("iPad Air (2022)", 480.0),
    ("MacBook Air M1", 720.0),
    ("Xperia 5 IV", 450.0),
    ("Redmi Note 12", 170.0),
    ("Fairphone 4", 380.0),
)
_STORAGES: tuple[tuple[str, float], ...] = (
    ("64 GB", 0.9),
    ("128 GB", 1.0),
    ("256 GB", 1.15),
    ("512 GB", 1.35),
)
_COLORS = ("Black", "White", "Blue", "Red", "Silver", "Midnight")
_PRODUCT_COUNT = len(_MODELS) * len(_STORAGES) * len(_COLORS)

# Rough exchange rates from EUR, so prices in a market look plausible.
_RATE_FROM_EUR = {"EUR": 1.0, "GBP": 0.86, "SEK": 11.3, "USD": 1.08, "JPY": 160.0, "AUD": 1.65}

_COMMENTS = {
    "fr": "Reconditionné et testé, garantie incluse.",
    "de": "Generalüberholt und geprüft, mit Garantie.",
    "es": "Reacondicionado y probado, con garantía.",
    "it": "Ricondizionato e testato, con garanzia.",
    "nl": "Gereviseerd en getest, met garantie.",
    "pt": "Recondicionado e testado, com garantia.",
    "el": "Ανακατασκευασμένο και ελεγμένο, με εγγύηση.",
    "sk": "Repasované a otestované, so zárukou.",
    "sv": "Renoverad och testad, med garanti.",
    "fi": "Kunnostettu ja testattu, takuu sisältyy.",
}
_COMMENT_FALLBACK = "Refurbished and tested, warranty included."


def _quantity_table() -> bytes:
    """Random byte -> stock level: ~12% sold out, most 1-10, a tail up to 50."""
    levels = []
    for byte in range(256):
        if byte < 31:
            levels.append(0)
        elif byte < 181:
            levels.append(1 + (byte - 31) % 10)
        elif byte < 241:
            levels.append(11 + (byte - 181) % 20)
        else:
            levels.append(31 + (byte - 241) * 19 // 14)
    return bytes(levels)


# ~90% online, the rest switched offline by the seller.
_STATE_TABLE = bytes(PUBLICATION_ONLINE if b < 230 else PUBLICATION_OFFLINE for b in range(256))
# Grade weights: few premium/stallone, mostly excellent..good.
_GRADE_TABLE = bytes(
    0 if b < 13 else 1 if b < 90 else 2 if b < 170 else 3 if b < 230 else 4 if b < 250 else 5
    for b in range(256)
)

_MASK62 = (1 << 62) - 1
_UUID_VARIANT_BITS = 0b10 << 62
_UUID_VERSION_MASK = 0xF000
_UUID_VERSION_4 = 0x4000


class _ListingUuidCodec:
    """Reversible, seed-keyed mapping between a listing index and a UUID."""

    def __init__(self, seed: int) -> None:
        key = blake2b(f"stock-sync-simulator:{seed}".encode(), digest_size=32).digest()
        self._xor = int.from_bytes(key[:8], "big") & _MASK62
        # An odd multiplier is invertible modulo 2**62.
        self._mul = (int.from_bytes(key[8:16], "big") & _MASK62) | 1
        self._mul_inverse = pow(self._mul, -1, 1 << 62)
        self._hash_key = key[16:32]

    def encode(self, index: int) -> str:
        low = ((index ^ self._xor) * self._mul) & _MASK62
        # x ^= x >> 31 is its own inverse on 62 bits.
        low ^= low >> 31
        high_bytes = blake2b(low.to_bytes(8, "big"), key=self._hash_key, digest_size=8).digest()
        high = (int.from_bytes(high_bytes, "big") & ~_UUID_VERSION_MASK) | _UUID_VERSION_4
        return str(uuid.UUID(int=(high << 64) | _UUID_VARIANT_BITS | low))

    def decode(self, value: uuid.UUID) -> int | None:
        """The index a generated UUID stands for, or None (caller checks the range)."""
        low = value.int & _MASK62
        low ^= low >> 31
        index = ((low * self._mul_inverse) & _MASK62) ^ self._xor
        if index >= 1 << 31 or self.encode(index) != str(value):
            return None
        return index


def _uuid_from_digest(digest: bytes) -> str:
    value = int.from_bytes(digest[:16], "big")
    value = (value & ~(0xF000 << 64)) | (0x4000 << 64)
    value = (value & ~(0b11 << 62)) | _UUID_VARIANT_BITS
    return str(uuid.UUID(int=value))


def _money(value: float | Decimal) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def parse_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ListingIdentity:
    id: str
    listing_id: int
    sku: str


class InvalidUpdate(ValueError):
    """The body of a listing update is not acceptable to Back Market."""


_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def _parse_integer(value: object, field: str) -> int:
    # bool is an int subclass; JSON true is not a quantity.
    if isinstance(value, bool):
        raise InvalidUpdate(f"{field} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    raise InvalidUpdate(f"{field} must be an integer")


def _parse_price(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidUpdate(f"{field} must be a decimal number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidUpdate(f"{field} must be a decimal number") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidUpdate(f"{field} must be a positive decimal number")
    return _money(amount)


@dataclass(frozen=True, slots=True)
class ListingUpdate:
    """A validated partial update: global quantity plus per-market fields."""

    quantity: int | None
    market_fields: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: object, *, currency: str) -> ListingUpdate:
        """Validate like Back Market does; fields it does not know are ignored."""
        if not isinstance(body, dict):
            raise InvalidUpdate("request body must be a JSON object")
        quantity: int | None = None
        if "quantity" in body:
            quantity = _parse_integer(body["quantity"], "quantity")
            if quantity < 0:
                raise InvalidUpdate("quantity must be a positive integer or 0")
            if quantity > MAX_QUANTITY:
                raise InvalidUpdate("quantity is too large")
        fields: dict[str, Any] = {}
        if "currency" in body and body["currency"] != currency:
            raise InvalidUpdate(f"currency must be {currency} on this market")
        if "price" in body:
            fields["price"] = _parse_price(body["price"], "price")
        if "min_price" in body:
            raw_min = body["min_price"]
            fields["min_price"] = None if raw_min is None else _parse_price(raw_min, "min_price")
        if "comment" in body:
            comment = body["comment"]
            if comment is not None and not isinstance(comment, str):
                raise InvalidUpdate("comment must be a string or null")
            if comment is not None and len(comment) > MAX_COMMENT_LENGTH:
                raise InvalidUpdate(f"comment must be at most {MAX_COMMENT_LENGTH} characters")
            fields["comment"] = comment
        if "warranty_delay" in body:
            months = _parse_integer(body["warranty_delay"], "warranty_delay")
            if months < MIN_WARRANTY_MONTHS:
                raise InvalidUpdate(f"warranty_delay must be at least {MIN_WARRANTY_MONTHS}")
            fields["warranty_delay"] = months
        return cls(quantity=quantity, market_fields=fields)


class ListingStore:
    """Listings indexed 0..total-1; removed ones keep their index but disappear."""

    def __init__(
        self,
        *,
        size: int,
        seed: int,
        markets: Sequence[str],
        market_coverage: float = 1.0,
    ) -> None:
        self.seed = seed
        self.markets: tuple[str, ...] = tuple(markets)
        self._market_index = {market: i for i, market in enumerate(self.markets)}
        self.market_coverage = market_coverage
        self._generated = size
        self._codec = _ListingUuidCodec(seed)

        # One C-speed random stream per attribute keeps start-up linear and fast.
        quantity_bytes = random.Random(f"{seed}:quantity").randbytes(size)
        self._quantities = array("i", array("B", quantity_bytes.translate(_quantity_table())))
        self._base_states = bytearray(
            random.Random(f"{seed}:state").randbytes(size).translate(_STATE_TABLE)
        )
        self._home_markets = bytearray(
            random.Random(f"{seed}:home").randbytes(size).translate(self._home_table())
        )
        # Per-market random byte per listing: decides whether the listing is published
        # there and whether it is offline there. Built on first use of a market.
        self._market_bytes: dict[int, bytes] = {}
        self._coverage_threshold = round(market_coverage * 256)

        self._removed: set[int] = set()
        self._added_identity: dict[int, ListingIdentity] = {}
        self._added_traits: dict[int, dict[str, Any]] = {}
        self._added_markets: dict[int, frozenset[int]] = {}
        self._index_by_uuid: dict[str, int] = {}
        self._index_by_listing_id: dict[int, int] = {}
        self._index_by_sku: dict[str, int] = {}
        self._market_fields: dict[tuple[int, int], dict[str, Any]] = {}
        self._members: dict[int, Sequence[int]] = {}

    def _home_table(self) -> bytes:
        """Random byte -> home market index; the first market gets the largest share."""
        count = len(self.markets)
        if count == 1:
            return bytes(256)
        return bytes(0 if b < 102 else 1 + (b - 102) % (count - 1) for b in range(256))

    # -- identity and lookup -------------------------------------------------

    @property
    def total(self) -> int:
        """Indices handed out so far, removed listings included."""
        return len(self._quantities)

    def __len__(self) -> int:
        return self.total - len(self._removed)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and 0 <= index < self.total and index not in self._removed

    def identity(self, index: int) -> ListingIdentity:
        added = self._added_identity.get(index)
        if added is not None:
            return added
        return ListingIdentity(
            id=self._codec.encode(index),
            listing_id=LISTING_ID_BASE + LISTING_ID_STRIDE * index,
            sku=f"{SKU_PREFIX}{index + 1:07d}",
        )

    def _live(self, index: int | None) -> int | None:
        return index if index is not None and index in self else None

    def find_by_uuid(self, text: str) -> int | None:
        parsed = parse_uuid(text)
        if parsed is None:
            return None
        added = self._index_by_uuid.get(str(parsed))
        if added is not None:
            return self._live(added)
        index = self._codec.decode(parsed)
        return self._live(index) if index is not None and index < self._generated else None

    def find_by_listing_id(self, listing_id: int) -> int | None:
        added = self._index_by_listing_id.get(listing_id)
        if added is not None:
            return self._live(added)
        offset = listing_id - LISTING_ID_BASE
        if offset < 0 or offset % LISTING_ID_STRIDE:
            return None
        index = offset // LISTING_ID_STRIDE
        return self._live(index) if index < self._generated else None

    def find_by_sku(self, sku: str) -> int | None:
        # Back Market treats SKUs case-insensitively.
        key = sku.strip().casefold()
        added = self._index_by_sku.get(key)
        if added is not None:
            return self._live(added)
        prefix = SKU_PREFIX.casefold()
        digits = key[len(prefix) :]
        if not key.startswith(prefix) or not digits.isdigit() or len(digits) < 7:
            return None
        index = int(digits) - 1
        if not 0 <= index < self._generated or self.identity(index).sku.casefold() != key:
            return None
        return self._live(index)

    def resolve(self, ref: str | int) -> int | None:
        """Index of a listing named by UUID, integer listing_id (int or digits) or SKU."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            return self.find_by_listing_id(ref)
        text = str(ref).strip()
        if parse_uuid(text) is not None and "-" in text:
            return self.find_by_uuid(text)
        if text.isdigit():
            found = self.find_by_listing_id(int(text))
            if found is not None:
                return found
        return self.find_by_sku(text)

    # -- global stock ----------------------------------------------------------

    def quantity(self, index: int) -> int:
        return self._quantities[index]

    def set_quantity(self, index: int, quantity: int) -> None:
        if not 0 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity must be within [0, {MAX_QUANTITY}]")
        self._quantities[index] = quantity

    # -- markets -----------------------------------------------------------

    def market_index(self, market: str) -> int | None:
        return self._market_index.get(market)

    def _bytes_for(self, market_index: int) -> bytes:
        found = self._market_bytes.get(market_index)
        if found is None:
            stream = random.Random(f"{self.seed}:market:{self.markets[market_index]}")
            found = stream.randbytes(self._generated)
            self._market_bytes[market_index] = found
        return found

    def _offline_band_start(self) -> int:
        # The top ~5% of the published range is offline in that market.
        return self._coverage_threshold - self._coverage_threshold // 20

    def is_published(self, index: int, market_index: int) -> bool:
        restricted = self._added_markets.get(index)
        if restricted is not None:
            return market_index in restricted
        if index >= self._generated or self._home_markets[index] == market_index:
            return True
        return self._bytes_for(market_index)[index] < self._coverage_threshold

    def publication_state(self, index: int, market_index: int) -> int:
        if not self.is_published(index, market_index):
            return PUBLICATION_MISSING_PRICE
        base = self._base_states[index]
        if base != PUBLICATION_ONLINE:
            return base
        # Back Market takes a sold-out listing offline.
        if self._quantities[index] == 0:
            return PUBLICATION_OFFLINE
        if (
            index < self._generated
            and self._home_markets[index] != market_index
            and self._bytes_for(market_index)[index] >= self._offline_band_start()
        ):
            return PUBLICATION_OFFLINE
        return PUBLICATION_ONLINE

    def members(self, market_index: int) -> Sequence[int]:
        """Indices listed on a market, in listing order."""
        cached = self._members.get(market_index)
        if cached is not None:
            return cached
        members: Sequence[int]
        if self._coverage_threshold >= 256 and not self._removed and not self._added_markets:
            # The common case costs nothing even at a million listings.
            members = range(self.total)
        else:
            members = array("i", self._scan_members(market_index))
        self._members[market_index] = members
        return members

    def _scan_members(self, market_index: int) -> Iterable[int]:
        removed = self._removed
        if self._coverage_threshold >= 256:
            generated: Iterable[int] = range(self._generated)
        else:
            market_bytes = self._bytes_for(market_index)
            homes = self._home_markets
            threshold = self._coverage_threshold
            generated = (
                i
                for i in range(self._generated)
                if market_bytes[i] < threshold or homes[i] == market_index
            )
        for index in generated:
            if index not in removed:
                yield index
        for index in range(self._generated, self.total):
            if index not in removed and self.is_published(index, market_index):
                yield index

    def select(
        self,
        market_index: int,
        *,
        publication_state: int | None = None,
        min_quantity: int | None = None,
        max_quantity: int | None = None,
    ) -> Sequence[int]:
        members = self.members(market_index)
        if publication_state is None and min_quantity is None and max_quantity is None:
            return members
        quantities = self._quantities
        low = min_quantity if min_quantity is not None else -1
        high = max_quantity if max_quantity is not None else MAX_QUANTITY
        return array(
            "i",
            [
                i
                for i in members
                if low <= quantities[i] <= high
                and (
                    publication_state is None
                    or self.publication_state(i, market_index) == publication_state
                )
            ],
        )

    # -- rendering -------------------------------------------------------------

    def _traits(self, index: int) -> dict[str, Any]:
        digest = blake2b(b"%d:%d" % (self.seed, index), digest_size=16, person=b"listing").digest()
        product = int.from_bytes(digest[:4], "big") % _PRODUCT_COUNT
        model, model_price = _MODELS[product % len(_MODELS)]
        storage, storage_factor = _STORAGES[(product // len(_MODELS)) % len(_STORAGES)]
        color = _COLORS[product // (len(_MODELS) * len(_STORAGES))]
        grade, state_code, grade_factor = GRADES[_GRADE_TABLE[digest[4]]]
        product_digest = blake2b(
            b"%d:%d" % (self.seed, product), digest_size=16, person=b"product"
        ).digest()
        traits: dict[str, Any] = {
            "product_id": _uuid_from_digest(product_digest),
            "backmarket_id": 1000 + product,
            "title": f"{model} {storage} - {color} - Unlocked",
            "grade": grade,
            "state": state_code,
            "base_price": model_price * storage_factor * grade_factor * (0.95 + digest[5] / 2550),
            "new_battery": digest[6] < 8,
            "warranty_delay": 12 if digest[7] < 200 else 24,
        }
        traits.update(self._added_traits.get(index, {}))
        return traits

    def _market_defaults(self, index: int, market: str, base_price: float) -> dict[str, Any]:
        digest = blake2b(
            b"%d:%d:%s" % (self.seed, index, market.encode()), digest_size=8, person=b"market"
        ).digest()
        currency = currency_of(market)
        price = base_price * _RATE_FROM_EUR.get(currency, 1.0) * (0.97 + digest[0] / 4250)
        return {
            "price": _money(price),
            "min_price": None if digest[1] < 51 else _money(price * 0.85),
            "max_price": _money(price * 1.25),
            "comment": None
            if digest[2] < 77
            else _COMMENTS.get(market.split("-")[0], _COMMENT_FALLBACK),
        }

    def render(self, index: int, market: str) -> dict[str, Any]:
        """The listing as GET /ws/listings/{id} shows it on one market."""
        market_index = self._market_index[market]
        identity = self.identity(index)
        traits = self._traits(index)
        published = self.is_published(index, market_index)
        per_market = (
            self._market_defaults(index, market, traits["base_price"])
            if published
            # Never configured there: no price yet, which is what state 0 means.
            else {"price": "0.00", "min_price": None, "max_price": "0.00", "comment": None}
        )
        per_market.setdefault("warranty_delay", traits["warranty_delay"])
        per_market.update(self._market_fields.get((index, market_index), {}))
        return {
            "id": identity.id,
            "listing_id": identity.listing_id,
            "product_id": traits["product_id"],
            "backmarket_id": traits["backmarket_id"],
            "sku": identity.sku,
            "title": traits["title"],
            "quantity": self._quantities[index],
            "price": per_market["price"],
            "min_price": per_market["min_price"],
            "max_price": per_market["max_price"],
            "currency": currency_of(market),
            "state": traits["state"],
            "grade": traits["grade"],
            "publication_state": self.publication_state(index, market_index),
            "warranty_delay": per_market["warranty_delay"],
            "comment": per_market["comment"],
            "shippings": [],
            "new_battery": traits["new_battery"],
        }

    # -- changes ---------------------------------------------------------------

    def apply_update(self, index: int, market: str, update: ListingUpdate) -> None:
        if update.quantity is not None:
            self.set_quantity(index, update.quantity)
        if update.market_fields:
            market_index = self._market_index[market]
            self._market_fields.setdefault((index, market_index), {}).update(update.market_fields)

    def add(
        self,
        *,
        id: str | None = None,
        listing_id: int | None = None,
        sku: str | None = None,
        quantity: int = 0,
        publication_state: int = PUBLICATION_ONLINE,
        markets: Iterable[str] | None = None,
        title: str | None = None,
        grade: str | None = None,
        prices: Mapping[str, str] | None = None,
    ) -> int:
        """Append a listing; identity fields default to the generated scheme."""
        index = self.total
        generated = self.identity(index)
        identity = ListingIdentity(
            id=str(uuid.UUID(id)) if id is not None else generated.id,
            listing_id=listing_id if listing_id is not None else generated.listing_id,
            sku=sku if sku is not None else generated.sku,
        )
        clashes = [
            name
            for name, found in (
                ("id", self.find_by_uuid(identity.id)),
                ("listing_id", self.find_by_listing_id(identity.listing_id)),
                ("sku", self.find_by_sku(identity.sku)),
            )
            if found is not None
        ]
        if clashes:
            raise ValueError(f"a listing with the same {', '.join(clashes)} exists")
        if not 0 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity must be within [0, {MAX_QUANTITY}]")
        if publication_state not in PUBLICATION_STATES:
            raise ValueError("publication_state must be within 0..4")
        if grade is not None and grade not in GRADE_NAMES:
            raise ValueError(f"grade must be one of {sorted(GRADE_NAMES)}")
        listed_on = None if markets is None else list(markets)
        unknown = [m for m in (*(listed_on or ()), *(prices or {})) if m not in self._market_index]
        if unknown:
            raise ValueError(f"unknown markets: {unknown}")
        market_indices = None
        if listed_on is not None:
            market_indices = frozenset(self._market_index[m] for m in listed_on)
        checked_prices = {
            self._market_index[market]: _parse_price(price, "price")
            for market, price in (prices or {}).items()
        }

        self._quantities.append(quantity)
        self._base_states.append(publication_state)
        self._home_markets.append(0)
        self._added_identity[index] = identity
        self._index_by_uuid[identity.id] = index
        self._index_by_listing_id[identity.listing_id] = index
        self._index_by_sku[identity.sku.casefold()] = index
        traits: dict[str, Any] = {}
        if title is not None:
            traits["title"] = title
        if grade is not None:
            traits["grade"] = grade
            traits["state"] = next(code for name, code, _ in GRADES if name == grade)
        self._added_traits[index] = traits
        if market_indices is not None:
            self._added_markets[index] = market_indices
        for market_index, price in checked_prices.items():
            self._market_fields.setdefault((index, market_index), {})["price"] = price
        self._members.clear()
        return index

    def remove(self, index: int) -> None:
        self._removed.add(index)
        self._members.clear()
