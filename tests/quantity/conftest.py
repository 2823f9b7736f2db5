"""Fixtures for the on-demand quantity tests: the service against the in-process simulator,
and one listing made for the test with a variation pointing at it (helpers in support.py)."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.config import SimulatorConfig
from tests.quantity.support import VARIATION_ID, LinkedListing, add_linked_listing


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Faults answer at once: a "timeout" is Cloudflare's 524 after timeout_fault_s, and a 429
    # says how long to wait, so the client's retries need not sit out a 10 s block.
    return SimulatorConfig(
        listings=20,
        seed=7,
        timeout_fault_s=0.01,
        send_retry_after=True,
        rate_limit_block_s=0.01,
    )


@pytest.fixture
async def listing(service: Any) -> LinkedListing:
    return await add_linked_listing(service, variation_id=VARIATION_ID)
