"""`marketplace.sync_enabled = 0`: no scheduled sync, no scheduled orders poll and a 409
`sync_disabled` for an API-started bulk sync; refresh still works. The column is read when a
sync or poll is due, so flipping it takes effect in the running service, without a restart."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.sync import run_scheduled_sync, runs
from tests.conftest import SECOND_ACCOUNT, TwoAccounts
from tests.sync.support import link, sync

pytestmark = pytest.mark.watcher_off(
    "drives the scheduled sync and poll itself and counts each run's calls"
)


async def set_sync_enabled(engine: AsyncEngine, marketplace_id: int, enabled: bool) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE marketplace SET sync_enabled = :enabled WHERE id = :id"),
            {"enabled": int(enabled), "id": marketplace_id},
        )


async def test_bulk_sync_of_a_disabled_marketplace_answers_409_until_it_is_enabled_again(
    service: Any,
) -> None:
    await set_sync_enabled(service.engine, 1, False)

    refused = await service.http.post("/sync/bulk", json={"marketplace_id": 1})
    refused_waiting = await service.http.post("/sync/bulk", params={"wait": "true"})
    await set_sync_enabled(service.engine, 1, True)
    run = await sync(service)

    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == "sync_disabled"
    assert "sync_enabled" in refused.json()["detail"]
    assert refused_waiting.status_code == 409
    assert run["status"] == "completed"
    assert [
        found.id for found in await runs.list_runs(service.engine, marketplace_id=1, limit=5)
    ] == [run["id"]]


async def test_a_disabled_marketplace_still_refreshes_a_variation(service: Any) -> None:
    linked = await link(service.engine, service.simulator, 0)
    service.simulator.set_quantity(linked.listing_uuid, 6)
    await set_sync_enabled(service.engine, 1, False)

    refreshed = await service.http.get(
        f"/variations/{linked.variation_id}/quantity", params={"refresh": "true"}
    )

    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["quantity"] == 6


async def test_the_scheduled_sync_skips_a_disabled_marketplace_and_runs_once_it_is_enabled(
    two_accounts: TwoAccounts,
) -> None:
    service = two_accounts.service
    runner = service.app.state.container.runner
    await set_sync_enabled(service.engine, SECOND_ACCOUNT, False)

    skipped = await run_scheduled_sync(runner=runner, marketplace_id=SECOND_ACCOUNT)
    other = await run_scheduled_sync(runner=runner, marketplace_id=1)
    await set_sync_enabled(service.engine, SECOND_ACCOUNT, True)
    ran = await run_scheduled_sync(runner=runner, marketplace_id=SECOND_ACCOUNT)

    assert skipped is None
    assert other is not None and other.status == "completed"
    assert ran is not None and ran.status == "completed"
    assert ran.marketplace_id == SECOND_ACCOUNT
    assert two_accounts.second.stats()["total_requests"] == ran.api_calls


async def test_the_scheduled_orders_poll_skips_a_disabled_marketplace_until_it_is_enabled(
    two_accounts: TwoAccounts,
) -> None:
    service = two_accounts.service
    container = service.app.state.container
    second = two_accounts.second
    await set_sync_enabled(service.engine, SECOND_ACCOUNT, False)

    await container.watchers[SECOND_ACCOUNT]._scheduled_poll()
    disabled = (await service.http.get("/sync/orders")).json()
    calls_while_disabled = second.stats()["total_requests"]
    await container.watchers[1]._scheduled_poll()
    await set_sync_enabled(service.engine, SECOND_ACCOUNT, True)
    await container.watchers[SECOND_ACCOUNT]._scheduled_poll()
    enabled = (await service.http.get("/sync/orders")).json()

    by_id = {entry["marketplace_id"]: entry for entry in disabled["watchers"]}
    assert calls_while_disabled == 0
    assert by_id[SECOND_ACCOUNT]["sync_enabled"] is False
    assert by_id[SECOND_ACCOUNT]["last_poll"] is None
    assert by_id[1]["sync_enabled"] is True
    assert second.stats()["total_requests"] >= 1
    polled = {entry["marketplace_id"]: entry for entry in enabled["watchers"]}[SECOND_ACCOUNT]
    assert polled["sync_enabled"] is True
    assert polled["last_poll"] is not None and polled["last_poll"]["error"] is None
