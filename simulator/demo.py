"""`stock-sync serve --demo`: simulators on free ports and a database with matching variations.

Marketplace 1 reads a Back Market simulator. Every marketplace configured with
`MARKETPLACE_<ID>_*` reads a simulator of its kind (its token and base URL replaced), and when
none is of kind `refurbed`, marketplace 4 is added as Refurbed, so the demo always shows two
marketplaces. Variations match Back Market's listings by id and the others' by SKU.

Demo data, not production code: the service itself never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import SecretStr

from app.config import MarketplaceVariables, Settings
from app.db import create_engine
from app.migrate import run_migrations
from app.models import Variation, table_of
from simulator.config import SimulatorConfig
from simulator.refurbed.demo import running_demo_refurbed_simulator
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


# The Refurbed marketplace the demo adds when none is configured: the seed's `4 Refurbed`.
DEMO_REFURBED_ID = 4


@dataclass(frozen=True, slots=True)
class DemoMarketplaces:
    """The settings pointed at the simulators, marketplace 1's simulator (the variations are
    seeded from its catalogue), and one line per simulator saying where it runs."""

    settings: Settings
    backmarket: RunningSimulator
    where: list[str]


@contextmanager
def running_demo_marketplaces(settings: Settings) -> Iterator[DemoMarketplaces]:
    """A simulator for marketplace 1 and one for every other configured marketplace (Refurbed
    as marketplace 4 when none is configured)."""
    with ExitStack() as stack:
        backmarket = stack.enter_context(running_demo_simulator())
        settings = demo_settings(settings, backmarket)
        where = [f"marketplace 1 (Back Market): simulator at {backmarket.base_url}"]
        others = dict(settings.marketplaces)
        if not any(given.kind == "refurbed" for given in others.values()):
            others.setdefault(DEMO_REFURBED_ID, MarketplaceVariables(kind="refurbed"))
        pointed: dict[int, MarketplaceVariables] = {}
        for marketplace_id, given in sorted(others.items()):
            if given.kind == "refurbed":
                refurbed = stack.enter_context(running_demo_refurbed_simulator())
                base_url, token = refurbed.base_url, refurbed.config.token
            else:
                # Another Back Market account: its own catalogue with the same SKUs.
                account = stack.enter_context(running_demo_simulator())
                base_url, token = account.base_url, account.config.token
            pointed[marketplace_id] = given.model_copy(
                update={
                    "base_url": base_url,
                    "token": SecretStr(token),
                    "requests_per_10s": max(given.requests_per_10s, 200),
                }
            )
            where.append(f"marketplace {marketplace_id} ({given.kind}): simulator at {base_url}")
        yield DemoMarketplaces(
            settings=settings.model_copy(update={"marketplaces": pointed}),
            backmarket=backmarket,
            where=where,
        )


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
