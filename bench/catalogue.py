"""The simulator's catalogue, known to the harness without asking the simulator for it.

The simulator derives every listing's identity from (seed, index) (see simulator/store.py),
so the harness builds the same identities locally and seeds one variation per listing:
variation `i + 1` is listing `i`. `check_against_simulator` confirms the first page agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bench.processes import SIM_TOKEN, USER_AGENT
from simulator.store import ListingStore

MARKET = "fr-fr"


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    variation_id: int
    listing_id: int
    uuid: str
    sku: str
    quantity: int


def generated_catalogue(*, listings: int, seed: int) -> list[CatalogueEntry]:
    store = ListingStore(size=listings, seed=seed, markets=(MARKET,))
    entries = []
    for index in range(listings):
        identity = store.identity(index)
        entries.append(
            CatalogueEntry(
                variation_id=index + 1,
                listing_id=identity.listing_id,
                uuid=identity.id,
                sku=identity.sku,
                quantity=store.quantity(index),
            )
        )
    return entries


def backmarket_headers(market: str = MARKET) -> dict[str, str]:
    return {
        "Authorization": f"Basic {SIM_TOKEN}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Accept-Language": market,
    }


async def check_against_simulator(base_url: str, catalogue: list[CatalogueEntry]) -> None:
    """Raise when the simulator's first page disagrees with the local catalogue.

    Goes through /_sim (not counted in the simulator's stats, never rate limited).
    """
    if not catalogue:
        return
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        for entry in (catalogue[0], catalogue[-1]):
            response = await http.get(f"/_sim/listings/{entry.uuid}")
            response.raise_for_status()
            listing = response.json()
            seen = (listing["id"], listing["listing_id"], listing["sku"], listing["quantity"])
            expected = (entry.uuid, entry.listing_id, entry.sku, entry.quantity)
            if seen != expected:
                raise RuntimeError(
                    f"the simulator's listing {entry.uuid} is {seen}, the harness expected "
                    f"{expected}: its id scheme changed (bench/catalogue.py)"
                )
