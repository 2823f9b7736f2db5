"""The generated catalogue: deterministic, compact, with O(1) lookups."""

from __future__ import annotations

import uuid

import pytest

from simulator.config import EU_MARKETS
from simulator.store import LISTING_ID_BASE, LISTING_ID_STRIDE, ListingStore


def store(size: int = 500, seed: int = 42) -> ListingStore:
    return ListingStore(size=size, seed=seed, markets=EU_MARKETS)


def snapshot(listings: ListingStore, market: str = "fr-fr") -> list[dict[str, object]]:
    return [listings.render(i, market) for i in range(listings.total)]


def test_same_seed_gives_the_same_catalogue() -> None:
    assert snapshot(store(seed=7)) == snapshot(store(seed=7))
    assert snapshot(store(seed=7), "en-gb") == snapshot(store(seed=7), "en-gb")


def test_other_seed_gives_another_catalogue() -> None:
    first, second = store(seed=1), store(seed=2)

    assert first.identity(0).id != second.identity(0).id
    assert [first.quantity(i) for i in range(100)] != [second.quantity(i) for i in range(100)]
    assert second.find_by_uuid(first.identity(5).id) is None


def test_identity_scheme() -> None:
    listings = store()
    identity = listings.identity(41)

    assert identity.listing_id == LISTING_ID_BASE + LISTING_ID_STRIDE * 41
    assert identity.sku == "SKU-0000042"
    assert uuid.UUID(identity.id).version == 4
    assert len({listings.identity(i).id for i in range(500)}) == 500


def test_catalogue_looks_like_a_sellers_stock() -> None:
    listings = store(size=5000)
    quantities = [listings.quantity(i) for i in range(5000)]
    states = [listings.publication_state(i, 0) for i in range(5000)]

    assert 0 < quantities.count(0) < 1000
    assert max(quantities) <= 50
    assert states.count(2) > 3500
    assert states.count(3) > 0
    assert set(states) <= {2, 3}


def test_prices_are_strings_in_the_markets_currency() -> None:
    listing = store().render(3, "sv-se")

    assert listing["currency"] == "SEK"
    assert isinstance(listing["price"], str)
    assert isinstance(listing["max_price"], str)
    assert listing["min_price"] is None or isinstance(listing["min_price"], str)


def test_100k_catalogue_builds_and_finds_its_last_listing_every_way() -> None:
    listings = store(size=100_000)
    last = listings.identity(99_999)

    assert len(listings) == 100_000
    assert listings.find_by_uuid(last.id) == 99_999
    assert listings.find_by_listing_id(last.listing_id) == 99_999
    assert listings.find_by_sku(last.sku) == 99_999
    assert listings.find_by_listing_id(last.listing_id + LISTING_ID_STRIDE) is None
    assert listings.find_by_sku("SKU-0100001") is None


@pytest.mark.parametrize(
    "ref", ["SKU-0000003", "sku-0000003", 100014, "100014", "placeholder-uuid"]
)
def test_resolve_accepts_any_reference(ref: object) -> None:
    listings = store()
    if ref == "placeholder-uuid":
        ref = listings.identity(2).id

    assert listings.resolve(ref) == 2  # type: ignore[arg-type]


def test_add_refuses_a_duplicate_identity() -> None:
    listings = store()

    with pytest.raises(ValueError, match="sku"):
        listings.add(sku="sku-0000001")
