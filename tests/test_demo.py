"""`stock-sync serve --demo`: a simulator, seeded variations, and a sync that reads them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from app.cli import sync_once
from app.config import MarketplaceVariables, Settings
from app.db import create_engine
from app.models import RunTrigger
from app.services.sync import SyncOptions
from simulator.demo import (
    ORPHAN_VARIATIONS,
    UNMATCHED_EVERY,
    demo_settings,
    running_demo_marketplaces,
    running_demo_simulator,
    seed_demo_database,
)
from simulator.refurbed.demo import demo_offer_skus

DEMO_SIZE = 60


async def test_demo_seeds_an_empty_database_once_and_its_first_sync_completes(
    tmp_path: Path,
) -> None:
    unmatched = DEMO_SIZE // UNMATCHED_EVERY
    with running_demo_simulator(listings=DEMO_SIZE) as simulator:
        settings = demo_settings(
            Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/demo.db"), simulator
        )
        seeded = await seed_demo_database(settings, simulator)
        seeded_again = await seed_demo_database(settings, simulator)
        run = await sync_once(settings, SyncOptions(trigger=RunTrigger.CLI))

    assert seeded == DEMO_SIZE - unmatched + ORPHAN_VARIATIONS
    assert seeded_again == 0
    assert run.status == "completed"
    assert run.listings_seen == DEMO_SIZE
    assert run.matched == DEMO_SIZE - unmatched
    assert run.unknown_listings == unmatched
    assert run.not_found == ORPHAN_VARIATIONS
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            stock_rows = (
                await conn.execute(sa.text("SELECT COUNT(*) FROM marketplace_stock"))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert stock_rows == DEMO_SIZE - unmatched


async def test_demo_points_every_marketplace_at_a_simulator_and_adds_refurbed_when_none_is_configured(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/demo.db",
        marketplaces={7: MarketplaceVariables(kind="backmarket", token=SecretStr("real-token"))},
    )
    with running_demo_marketplaces(settings) as demo:
        configured = {config.id: config for config in demo.settings.marketplace_settings()}
        await seed_demo_database(demo.settings, demo.backmarket)
        runs = {
            marketplace_id: await sync_once(
                demo.settings, SyncOptions(marketplace_id=marketplace_id, trigger=RunTrigger.CLI)
            )
            for marketplace_id in configured
        }

    assert {marketplace_id: config.kind for marketplace_id, config in configured.items()} == {
        1: "backmarket",
        4: "refurbed",
        7: "backmarket",
    }
    # Every account reads its own simulator, never the address or token it was configured with.
    assert len({config.base_url for config in configured.values()}) == 3
    assert configured[7].token is not None
    assert configured[7].token.get_secret_value() != "real-token"
    assert [run.status for run in runs.values()] == ["completed"] * 3
    assert runs[4].listings_seen == len(demo_offer_skus())
    assert len(demo.where) == 3
