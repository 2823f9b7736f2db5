"""`stock-sync serve --demo`: a simulator on a free port and a database with matching variations.

Demo data, not production code: the service itself never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from pydantic import SecretStr

from app.config import Settings
from app.db import create_engine
from app.migrate import run_migrations
from app.models import Variation, table_of
from simulator.config import SimulatorConfig
from simulator.testing import RunningSimulator

DEMO_LISTINGS = 500
# Every 10th listing has no variation (shows `unknown_listings`); the rest alternate between
# matching by integer listing_id and by UUID, the two keys Back Market offers.
UNMATCHED_EVERY = 10
# Variations whose listing is gone from Back Market (shows `not_found`).
ORPHAN_VARIATIONS = 3


@contextmanager
def running_demo_simulator(listings: int = DEMO_LISTINGS) -> Iterator[RunningSimulator]:
    # A little latency and a trickle of orders make the demo behave like the real thing.
    config = SimulatorConfig(listings=listings, seed=42, latency_ms=20, orders_per_minute=30)
    with RunningSimulator(config, log_level="warning") as simulator:
        yield simulator


def demo_settings(settings: Settings, simulator: RunningSimulator) -> Settings:
    return settings.model_copy(
        update={
            "backmarket_base_url": simulator.base_url,
            "backmarket_token": SecretStr(simulator.config.token),
            "backmarket_requests_per_10s": max(settings.backmarket_requests_per_10s, 200),
        }
    )


async def seed_demo_database(settings: Settings, simulator: RunningSimulator) -> int:
    """Migrate, then add variations matching the simulator's catalogue if there are none yet."""
    engine = create_engine(settings)
    try:
        await run_migrations(engine)
        variation = table_of(Variation)
        async with engine.begin() as conn:
            if (await conn.execute(sa.select(sa.func.count()).select_from(variation))).scalar_one():
                return 0
            rows = []
            store = simulator.state.store
            for index in range(store.total):
                if index % UNMATCHED_EVERY == UNMATCHED_EVERY - 1:
                    continue
                identity = store.identity(index)
                by_uuid = index % 2 == 1
                rows.append(
                    {
                        "reference_id": None if by_uuid else str(identity.listing_id),
                        "reference_uuid": identity.id if by_uuid else None,
                        "sku": identity.sku,
                        "name": f"Demo device {index + 1}",
                        "listed_stock": 0,
                    }
                )
            for orphan in range(ORPHAN_VARIATIONS):
                rows.append(
                    {
                        "reference_id": str(9_000_000 + orphan),
                        "reference_uuid": None,
                        "sku": f"GONE-{orphan + 1}",
                        "name": f"Delisted device {orphan + 1}",
                        "listed_stock": 0,
                    }
                )
            await conn.execute(sa.insert(variation), rows)
            return len(rows)
    finally:
        await engine.dispose()
