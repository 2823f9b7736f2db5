"""Accounts configured side by side, through the running service: every watcher in
`GET /sync/orders`, and one account paused by 429s (a second Back Market account, Refurbed)
never holding up Back Market's live read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import MarketplaceVariables, Settings
from app.services.marketplace import ListingRef, RateLimited
from simulator.refurbed.app import create_refurbed_simulator_app
from simulator.refurbed.config import RefurbedSimulatorConfig
from tests.conftest import SECOND_ACCOUNT, ServiceHarness, TwoAccounts, running_harness
from tests.sync.support import link

pytestmark = pytest.mark.watcher_off(
    "polls the watchers itself, counts budget waits, and Refurbed admits one call an hour"
)


async def test_orders_status_keeps_marketplace_1_at_the_top_and_lists_every_watcher(
    two_accounts: TwoAccounts,
) -> None:
    service = two_accounts.service
    await service.app.state.container.watchers[SECOND_ACCOUNT].poll()

    body = (await service.http.get("/sync/orders")).json()

    by_id = {entry["marketplace_id"]: entry for entry in body["watchers"]}
    assert [entry["marketplace_id"] for entry in body["watchers"]] == [1, SECOND_ACCOUNT]
    # Only marketplace 7 has polled: the top level is marketplace 1's, untouched.
    assert body["last_poll"] is None and body["watermark"] is None
    assert {
        key: value for key, value in body.items() if key not in ("watchers", "lag_seconds")
    } == {
        key: value
        for key, value in by_id[1].items()
        if key not in ("marketplace_id", "lag_seconds")
    }
    second = by_id[SECOND_ACCOUNT]
    assert second["last_poll"]["error"] is None and second["last_poll"]["calls"] >= 1
    assert second["watermark"] is not None
    for entry in body["watchers"]:
        assert {"enabled", "interval_seconds", "watermark", "last_poll"} <= entry.keys()


def live_wait(marketplace_id: int) -> tuple[float, float]:
    """Live calls granted by that account's budget so far, and their total wait."""
    labels = {"marketplace_id": str(marketplace_id), "kind": "live"}
    count = REGISTRY.get_sample_value("backmarket_budget_wait_seconds_count", labels) or 0.0
    waited = REGISTRY.get_sample_value("backmarket_budget_wait_seconds_sum", labels) or 0.0
    return count, waited


PAUSE_SECONDS = 60


@pytest.fixture
def second_simulator_app() -> Any:
    """Marketplace 7 answers 429 with a long Retry-After."""
    from simulator.app import create_simulator_app
    from simulator.config import SimulatorConfig

    return create_simulator_app(
        SimulatorConfig(
            listings=60, seed=11, rate_limit_block_s=PAUSE_SECONDS, send_retry_after=True
        )
    )


async def test_an_account_paused_by_429s_does_not_delay_another_accounts_live_read(
    two_accounts: TwoAccounts,
) -> None:
    service = two_accounts.service
    registry = service.app.state.container.ctx.marketplaces
    linked = await link(service.engine, service.simulator, 0)
    service.simulator.set_quantity(linked.listing_uuid, 4)
    two_accounts.second.fail_next("/ws", count=1000, kind="429")
    # Account 7's own call gives up at once rather than waiting out its pause to retry.
    registry.get(SECOND_ACCOUNT).client.max_retry_wait_seconds = 1.0
    with pytest.raises(RateLimited):
        await registry.get(SECOND_ACCOUNT).get_listing(ListingRef(reference=linked.listing_uuid))
    paused = registry.get(SECOND_ACCOUNT).paused_for()
    granted_before, waited_before = live_wait(1)

    read = await service.http.get(
        f"/variations/{linked.variation_id}/quantity", params={"refresh": "true"}
    )

    granted_after, waited_after = live_wait(1)
    assert paused > PAUSE_SECONDS / 2
    assert read.status_code == 200, read.text
    assert read.json()["quantity"] == 4
    # Account 1's budget granted the read at once: none of account 7's pause was waited out.
    assert granted_after - granted_before >= 1
    assert waited_after - waited_before < 1.0
    assert registry.get(1).paused_for() == 0
    assert registry.get(SECOND_ACCOUNT).paused_for() > PAUSE_SECONDS / 2


REFURBED = 4


@pytest.fixture
async def refurbed_beside(
    engine: AsyncEngine,
    make_settings: Callable[..., Settings],
    settings_overrides: dict[str, Any],
    simulator_app: FastAPI,
) -> AsyncIterator[tuple[ServiceHarness, FastAPI]]:
    """The service with marketplace 4 as Refurbed, whose simulator admits one call an hour."""
    refurbed_app = create_refurbed_simulator_app(
        RefurbedSimulatorConfig(offers=10, requests_per_window=1, rate_limit_window_s=3600)
    )
    settings = make_settings(
        **settings_overrides,
        marketplaces={
            REFURBED: MarketplaceVariables(
                kind="refurbed", token="sim-token", base_url="http://refurbed.test"
            )
        },
    )
    async with running_harness(
        settings,
        httpx.ASGITransport(app=simulator_app),
        simulator_app,
        marketplace_transports={REFURBED: httpx.ASGITransport(app=refurbed_app)},
    ) as harness:
        yield harness, refurbed_app


async def test_refurbed_answering_429_to_everything_does_not_delay_a_back_market_live_read(
    refurbed_beside: tuple[ServiceHarness, FastAPI],
) -> None:
    service, refurbed_app = refurbed_beside
    registry = service.app.state.container.ctx.marketplaces
    linked = await link(service.engine, service.simulator, 0)
    service.simulator.set_quantity(linked.listing_uuid, 4)
    refurbed = registry.get(REFURBED)
    await refurbed.get_listing(ListingRef(sku="SKU-0000001"))  # the hour's one call
    with pytest.raises(RateLimited):
        await refurbed.get_listing(ListingRef(sku="SKU-0000002"))
    sent = refurbed_app.state.sim.stats()["total_requests"]
    granted_before, waited_before = live_wait(1)

    read = await service.http.get(
        f"/variations/{linked.variation_id}/quantity", params={"refresh": "true"}
    )

    granted_after, waited_after = live_wait(1)
    assert refurbed.paused_for() > 60
    # The first answer said Remaining 0 until the hour ends: the second call was not even sent.
    assert sent == 1
    assert read.status_code == 200, read.text
    assert read.json()["quantity"] == 4
    assert granted_after - granted_before >= 1
    assert waited_after - waited_before < 1.0
    assert registry.get(1).paused_for() == 0
