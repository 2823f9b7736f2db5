"""`stock-sync serve --demo`: a simulator, seeded variations, and a sync that reads them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from app.cli import sync_once
from app.config import Settings
from app.db import create_engine
from app.models import RunTrigger
from app.services.sync import SyncOptions
from simulator.demo import (
    ORPHAN_VARIATIONS,
    UNMATCHED_EVERY,
    demo_settings,
    running_demo_simulator,
    seed_demo_database,
)

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
