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
def settings_overrides() -> dict[str, Any]:
    # Two attempts so that "after the client's retries" is exercised; a request budget far
    # above what the tests send so the client never paces them.
    return {"backmarket_requests_per_10s": 10_000, "backmarket_max_attempts": 2}


@pytest.fixture
async def quantity_service(service: Any) -> Any:
    """The service with the client's retry backoff shrunk to nothing (tests assert no timing)."""
    client = service.app.state.services.backmarket
    client.backoff_base_seconds = 0.0
    client.backoff_cap_seconds = 0.0
    return service


@pytest.fixture
async def listing(quantity_service: Any) -> LinkedListing:
    return await add_linked_listing(quantity_service, variation_id=VARIATION_ID)
