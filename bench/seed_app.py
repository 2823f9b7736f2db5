"""The seed application's stock read, rebuilt for comparison (scenario 2).

Its `BackMarketAPIController::getAllListings` (public repository waapsdeveloper/nibtech-mv4)
walks every country one after another and, inside a country, every page one after another
(`/ws/listings?page-size=50&page=N` until `next` is null). Here each page's stock is written
through the service's own writer, so both ways leave comparable rows and only the reading
pattern differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from app.models import ChangeType
from app.services.stock import StockObservation, write_observations
from bench.catalogue import CatalogueEntry, backmarket_headers
from bench.database import MARKETPLACE_ID, BenchDatabase
from simulator.config import EU_MARKETS

SEED_PAGE_SIZE = 50


@dataclass
class SeedRunOutcome:
    requests: int = 0
    listings_seen: int = 0
    unknown: int = 0


async def seed_app_sync(
    *,
    base_url: str,
    db: BenchDatabase,
    catalogue: Sequence[CatalogueEntry],
    markets: Sequence[str] = EU_MARKETS,
) -> SeedRunOutcome:
    """Every market, every page, one request at a time; each page's stock written after it."""
    variation_of = {entry.listing_id: entry.variation_id for entry in catalogue}
    outcome = SeedRunOutcome()
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        for market in markets:
            page = 1
            while True:
                response = await http.get(
                    "/ws/listings",
                    params={"page-size": SEED_PAGE_SIZE, "page": page},
                    headers=backmarket_headers(market),
                )
                outcome.requests += 1
                response.raise_for_status()
                body = response.json()
                observations = []
                for listing in body["results"]:
                    outcome.listings_seen += 1
                    variation_id = variation_of.get(listing["listing_id"])
                    if variation_id is None:
                        outcome.unknown += 1
                        continue
                    observations.append(
                        StockObservation(
                            variation_id=variation_id,
                            quantity=int(listing["quantity"]),
                            sku=listing["sku"],
                            reference_id=str(listing["listing_id"]),
                        )
                    )
                async with db.engine.begin() as conn:
                    await write_observations(
                        conn,
                        marketplace_id=MARKETPLACE_ID,
                        observations=observations,
                        change_type=ChangeType.BULK_SYNC,
                    )
                if body["next"] is None:
                    break
                page += 1
    return outcome
