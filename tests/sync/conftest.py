"""Fixtures for the bulk sync tests: the service against the in-process simulator, tuned so the
client never paces or backs off (tests assert behaviour, not timing)."""

from __future__ import annotations

from typing import Any

import pytest

from app.services.locks import NamedLocks
from app.services.sync import BulkSyncRunner
from simulator.config import SimulatorConfig


@pytest.fixture
def listings() -> int:
    """Listings in the simulator's catalogue; parametrize `listings` to change it."""
    return 120  # three pages of 50 per market


@pytest.fixture
def simulator_config(listings: int) -> SimulatorConfig:
    return SimulatorConfig(listings=listings, seed=7, markets=("fr-fr", "de-de", "es-es"))


@pytest.fixture
def runner(service: Any) -> BulkSyncRunner:
    found: BulkSyncRunner = service.app.state.container.runner
    return found


@pytest.fixture
def locks(engine: Any) -> NamedLocks:
    return NamedLocks(engine)
