"""The bulk sync of marketplace 4 configured as Refurbed (MARKETPLACE_4_*, its simulator on a
socket), on SQLite and MariaDB: offers matched to variations by SKU, a SKU on two variations
matching none, the offer id stored per (variation, marketplace) and used by live calls, and
marketplace 1's feed the only one rewriting a variation's SKU and state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import MarketplaceStock, RunTrigger, Variation, table_of
from app.services.sync import BulkSyncRunner, SyncOptions
from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.testing import RunningRefurbedSimulator
from tests.sync.support import add_stock, add_variation, identity

pytestmark = pytest.mark.watcher_off("counts every request to the Refurbed simulator")

REFURBED = 4
TOKEN = "refurbed-sync-token"
OFFERS = 250
# Variations for the first MATCHED offers' SKUs; the other offers are unknown to the service.
MATCHED = 200
BACKMARKET_STOCK = 3
LOCAL_STATE = 7

stock_table = table_of(MarketplaceStock)
variation_table = table_of(Variation)


def sku(index: int) -> str:
    """The demo SKU of offer `index` (0-based), as both simulators name them."""
    return f"SKU-{index + 1:07d}"


@pytest.fixture
def refurbed() -> Iterator[RunningRefurbedSimulator]:
    with RunningRefurbedSimulator(RefurbedSimulatorConfig(offers=OFFERS, token=TOKEN)) as simulator:
        yield simulator


@pytest.fixture
def settings_overrides(refurbed: RunningRefurbedSimulator) -> dict[str, Any]:
    return {
        "backmarket_requests_per_10s": 10_000,
        "backmarket_max_attempts": 2,
        "marketplaces": {
            REFURBED: {
                "kind": "refurbed",
                "token": TOKEN,
                "base_url": refurbed.base_url,
                "requests_per_10s": 10_000,
            }
        },
    }


async def sync(service: Any, marketplace_id: int) -> dict[str, Any]:
    response = await service.http.post(
        "/sync/bulk?wait=true", json={"marketplace_id": marketplace_id}
    )
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()["run"]
    return run


async def stock_rows(engine: AsyncEngine, marketplace_id: int) -> dict[int, Any]:
    async with engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(stock_table).where(stock_table.c.marketplace_id == marketplace_id)
                )
            )
            .mappings()
            .all()
        )
    return {row["variation_id"]: row for row in rows}


async def variation_row(engine: AsyncEngine, variation_id: int) -> Any:
    async with engine.connect() as conn:
        return (
            (
                await conn.execute(
                    sa.select(variation_table).where(variation_table.c.id == variation_id)
                )
            )
            .mappings()
            .one()
        )


async def set_variation_sku(engine: AsyncEngine, variation_id: int, new_sku: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(variation_table)
            .where(variation_table.c.id == variation_id)
            .values(sku=new_sku)
        )


def offer_id(refurbed: RunningRefurbedSimulator, offer_sku: str) -> int:
    offer = refurbed.state.find_offer(sku=offer_sku)
    assert offer is not None
    return int(offer.id)


def capture_refurbed_bodies(service: Any) -> list[dict[str, Any]]:
    """The JSON bodies the service sends to Refurbed from now on, with the RPC's path."""
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        sent.append({"path": request.url.path, **json.loads(request.content or b"{}")})

    adapter = service.app.state.container.ctx.marketplaces.get(REFURBED)
    adapter._http.event_hooks["request"].append(record)
    return sent


async def test_a_refurbed_bulk_sync_matches_offers_by_sku_and_stores_each_offer_id(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    variations = {}
    for index in range(MATCHED):
        variation_id = await add_variation(service.engine, sku=sku(index), state=LOCAL_STATE)
        await add_stock(service.engine, variation_id=variation_id, listed_stock=BACKMARKET_STOCK)
        variations[variation_id] = sku(index)

    run = await sync(service, REFURBED)

    assert run["status"] == "completed", run
    assert run["api_calls"] == 3  # ceil(250 / 100) ListOffers pages
    # No page count is announced; read whole, the feed had the pages that were read.
    assert (run["pages_fetched"], run["pages_expected"]) == (3, 3)
    assert (run["listings_seen"], run["matched"], run["unknown_listings"]) == (
        OFFERS,
        MATCHED,
        OFFERS - MATCHED,
    )
    assert (run["updated"], run["ambiguous_sku"], run["not_found"]) == (MATCHED, 0, 0)
    rows = await stock_rows(service.engine, REFURBED)
    assert sorted(rows) == sorted(variations)
    for variation_id, offer_sku in variations.items():
        row = rows[variation_id]
        assert row["listing_reference"] == str(offer_id(refurbed, offer_sku))
        assert row["listed_stock"] == refurbed.state.stock_of(offer_sku)
        variation = await variation_row(service.engine, variation_id)
        # The total over both marketplaces; Refurbed's feed left SKU and state alone.
        assert variation["listed_stock"] == BACKMARKET_STOCK + row["listed_stock"]
        assert (variation["sku"], variation["state"]) == (offer_sku, LOCAL_STATE)
    # Back Market was not asked anything.
    assert service.simulator.stats()["total_requests"] == 0


async def test_a_sku_on_two_variations_matches_neither_and_is_reported_once(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    twins = [await add_variation(service.engine, sku=sku(4)) for _ in range(2)]
    single = await add_variation(service.engine, sku=sku(5))

    run = await sync(service, REFURBED)

    assert run["status"] == "completed", run
    assert (run["matched"], run["ambiguous_sku"]) == (1, 1)
    ambiguous = [error for error in run["errors"] if error["kind"] == "ambiguous_sku"]
    assert ambiguous == [
        {
            "kind": "ambiguous_sku",
            "sku": sku(4),
            "variations": 2,
            "message": ambiguous[0]["message"],
        }
    ]
    assert sku(4) in ambiguous[0]["message"]
    rows = await stock_rows(service.engine, REFURBED)
    assert sorted(rows) == [single]
    assert all(twin not in rows for twin in twins)
    stored = await service.http.get(f"/sync/runs/{run['id']}")
    assert stored.json()["run"]["ambiguous_sku"] == 1


async def test_a_sku_on_a_live_and_a_soft_deleted_variation_is_the_live_ones(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    deleted, live = [await add_variation(service.engine, sku=sku(4)) for _ in range(2)]
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.update(variation_table)
            .where(variation_table.c.id == deleted)
            .values(deleted_at=sa.func.current_timestamp())
        )

    run = await sync(service, REFURBED)

    assert run["status"] == "completed", run
    assert (run["matched"], run["ambiguous_sku"]) == (1, 0)
    rows = await stock_rows(service.engine, REFURBED)
    assert sorted(rows) == [live]
    assert rows[live]["listed_stock"] == refurbed.state.stock_of(sku(4))


async def test_an_offer_without_sku_is_unknown(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    refurbed.state.add_offer(sku="", stock=9)
    # A variation without SKU must not be taken for the offer without one.
    blank = await add_variation(service.engine, sku="")
    known = await add_variation(service.engine, sku=sku(0))

    run = await sync(service, REFURBED)

    assert run["status"] == "completed", run
    assert (run["listings_seen"], run["matched"], run["unknown_listings"]) == (
        OFFERS + 1,
        1,
        OFFERS,
    )
    rows = await stock_rows(service.engine, REFURBED)
    assert sorted(rows) == [known]
    assert blank not in rows


async def test_import_unknown_on_refurbed_is_refused(service: Any) -> None:
    response = await service.http.post(
        "/sync/bulk", json={"marketplace_id": REFURBED, "import_unknown": True}
    )

    assert response.status_code == 422
    assert "import_unknown" in response.json()["detail"]
    listed = await service.http.get(f"/sync/runs?marketplace_id={REFURBED}")
    assert listed.json()["runs"] == []


async def test_a_refresh_on_refurbed_names_the_stored_offer_id_and_never_rewrites_the_sku(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    synced = await add_variation(service.engine, sku=sku(0), state=LOCAL_STATE)
    await sync(service, REFURBED)
    never_synced = await add_variation(service.engine, sku=sku(1), state=LOCAL_STATE)
    # The back office renamed the SKU since: the stored offer id still finds the offer.
    await set_variation_sku(service.engine, synced, "RENAMED-LOCALLY")
    refurbed.state.set_stock(sku(0), 11)
    refurbed.state.set_stock(sku(1), 12)
    sent = capture_refurbed_bodies(service)

    first = await service.http.get(
        f"/variations/{synced}/quantity", params={"marketplace_id": REFURBED, "refresh": "true"}
    )
    second = await service.http.get(
        f"/variations/{never_synced}/quantity",
        params={"marketplace_id": REFURBED, "refresh": "true"},
    )

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert (first.json()["quantity"], second.json()["quantity"]) == (11, 12)
    get_offers = [body for body in sent if body["path"].endswith("/GetOffer")]
    assert [body["identifier"] for body in get_offers] == [
        {"id": str(offer_id(refurbed, sku(0)))},
        {"sku": sku(1)},
    ]
    assert first.json()["sku"] == "RENAMED-LOCALLY"
    for variation_id, expected_sku in ((synced, "RENAMED-LOCALLY"), (never_synced, sku(1))):
        variation = await variation_row(service.engine, variation_id)
        assert (variation["sku"], variation["state"]) == (expected_sku, LOCAL_STATE)
        # Marketplace 1's reference columns are Back Market's, never a Refurbed offer id.
        assert (variation["reference_id"], variation["reference_uuid"]) == (None, None)
    rows = await stock_rows(service.engine, REFURBED)
    # The refresh stored what it found for the variation never synced.
    assert rows[never_synced]["listing_reference"] == str(offer_id(refurbed, sku(1)))


async def test_marketplace_1s_refresh_still_rewrites_the_variations_sku_and_state(
    service: Any,
) -> None:
    listing = identity(service.simulator, 0)
    variation_id = await add_variation(
        service.engine, reference_uuid=listing.id, sku="OLD-SKU", state=LOCAL_STATE
    )

    response = await service.http.get(
        f"/variations/{variation_id}/quantity", params={"refresh": "true"}
    )

    assert response.status_code == 200, response.text
    variation = await variation_row(service.engine, variation_id)
    assert variation["sku"] == listing.sku
    assert variation["state"] != LOCAL_STATE
    rows = await stock_rows(service.engine, 1)
    assert rows[variation_id]["listing_reference"] == listing.id


async def test_bulk_syncs_of_marketplaces_1_and_4_run_at_the_same_time(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    # One variation sold on both: Back Market's listing 0 and the Refurbed offer of its SKU.
    listing = identity(service.simulator, 0)
    await add_variation(service.engine, reference_uuid=listing.id, sku=listing.sku)
    runner: BulkSyncRunner = service.app.state.container.runner
    # Refurbed's first page waits until marketplace 1's run has finished.
    hold = refurbed.state.hold("/refb.merchant.v1.OfferService/ListOffers")
    started, refurbed_run = await runner.start(
        SyncOptions(marketplace_id=REFURBED, trigger=RunTrigger.API)
    )
    await refurbed.state.wait_held(hold)

    backmarket = await sync(service, 1)
    refurbed.state.release(hold)
    finished = await refurbed_run

    assert backmarket["status"] == "completed", backmarket
    assert backmarket["matched"] == 1
    assert started.status == "running"
    assert (finished.status, finished.matched) == ("completed", 1)
