"""Fixtures of the orders watcher tests: the service against the in-process simulator, the
watcher's own tables emptied, faults that answer at once (helpers in support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from simulator.config import SimulatorConfig
from tests.orders.support import WATCHER_TABLES


@pytest.fixture
def watcher_off() -> bool:
    """These tests poll the watcher themselves (`polled`) and count its calls: a scheduled poll
    would race theirs. The scheduled tests set ORDER_SYNC_INTERVAL_SECONDS themselves."""
    return True


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # A "timeout" is Cloudflare's 524 after timeout_fault_s: the client's retries go at once.
    return SimulatorConfig(
        listings=20, seed=7, markets=("fr-fr",), timeout_fault_s=0.01, send_retry_after=True
    )


@pytest.fixture
async def engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The shared `engine` (stock tables emptied), the watcher's own tables emptied too."""
    async with engine.begin() as conn:
        for table in WATCHER_TABLES:
            await conn.execute(sa.text(f"DELETE FROM {table}"))
    yield engine
