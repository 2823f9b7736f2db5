"""Two Back Market accounts configured side by side, through the running service: every watcher
in `GET /sync/orders`, and one account paused by 429s never holding up the other's live read."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.services.marketplace import ListingRef, RateLimited
from tests.conftest import SECOND_ACCOUNT, TwoAccounts
from tests.sync.support import link


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
