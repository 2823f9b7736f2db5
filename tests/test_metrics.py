"""`GET /metrics` after the work: the request budget's wait by kind of call, the bulk sync's page
queue depth, the orders watcher's lag; and every metric the service exports is in the README.

The registry is the process's, shared with other tests: counts are compared before and after.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.sync.batch import BatchWriter
from app.services.sync.intake import QUEUE_PAGES
from simulator.config import SimulatorConfig
from tests.orders.support import WATCHER_TABLES, another_process, polled
from tests.sync.support import link, sync, wait_for_run

REPOSITORY = Path(__file__).resolve().parents[1]
LISTINGS = 1000  # 20 pages of 50: more than the page queue holds


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(listings=LISTINGS, seed=7, markets=("fr-fr",))


@pytest.fixture
async def engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The shared `engine` (stock tables emptied), the orders watcher's tables emptied too."""
    async with engine.begin() as conn:
        for table in WATCHER_TABLES:
            await conn.execute(sa.text(f"DELETE FROM {table}"))
    yield engine


async def scrape(service: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await service.http.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_time_waited_on_the_request_budget_is_exported_by_kind_of_call(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0)
    before = await scrape(service)

    run = await sync(service)
    refreshed = await service.http.get(f"/variations/{linked.variation_id}/quantity")
    await polled(service)
    after = await scrape(service)

    assert run["status"] == "completed"
    assert refreshed.status_code == 200

    def waits(samples: dict[Any, float], kind: str) -> float:
        return value(samples, "backmarket_budget_wait_seconds_count", marketplace_id="1", kind=kind)

    # One budget slot per request sent: the pages for the bulk kind, at least one of each other.
    assert waits(after, "bulk") - waits(before, "bulk") == run["api_calls"]
    assert waits(after, "live") - waits(before, "live") >= 1
    assert waits(after, "watcher") - waits(before, "watcher") >= 1
    for kind in ("bulk", "live", "watcher"):
        labels = {"marketplace_id": "1", "kind": kind}
        waited = value(after, "backmarket_budget_wait_seconds_sum", **labels)
        assert waited >= value(before, "backmarket_budget_wait_seconds_sum", **labels)
        assert value(after, "backmarket_budget_waiting", **labels) == 0


async def test_the_page_queue_depth_shows_pages_waiting_for_the_writer(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_may_go = asyncio.Event()
    original_write = BatchWriter.write

    async def slow_writer(self: BatchWriter, batch: Any) -> None:
        await writer_may_go.wait()
        await original_write(self, batch)

    monkeypatch.setattr(BatchWriter, "write", slow_writer)
    started = await service.http.post("/sync/bulk")
    assert started.status_code == 202, started.text
    run_id = started.json()["run"]["id"]

    # The writer holds its first batch; the fetchers fill the bounded queue and stop there.
    depths = []
    for _ in range(2000):
        depths.append(value(await scrape(service), "bulk_sync_page_queue_depth"))
        if depths[-1] == QUEUE_PAGES:
            break
        await asyncio.sleep(0.005)
    writer_may_go.set()
    finished = await wait_for_run(service, run_id)
    after = await scrape(service)

    assert depths[-1] == QUEUE_PAGES
    assert all(0 <= depth <= QUEUE_PAGES for depth in depths)
    assert finished["status"] == "completed"
    assert finished["pages_fetched"] == LISTINGS // 50
    assert value(after, "bulk_sync_page_queue_depth") == 0


@pytest.mark.watcher_off("polls the watcher itself; a scheduled poll would move the lag")
async def test_watcher_lag_counts_from_the_last_successful_poll_not_a_failed_one(
    service: Any,
) -> None:
    before_any = await scrape(service)
    succeeded = await polled(service)
    just_after = value(await scrape(service), "orders_watcher_lag_seconds", marketplace_id="1")
    # Spacing, not a speed claim: lets a lag counted from the failed poll show as too small.
    await asyncio.sleep(0.3)
    service.simulator.fail_next("/ws/orders", count=10, kind="500")
    failed = await polled(service)
    service.simulator.clear_faults()
    after_failure = await scrape(service)
    status = (await service.http.get("/sync/orders")).json()

    assert math.isnan(value(before_any, "orders_watcher_lag_seconds", marketplace_id="1"))
    assert succeeded.error is None
    assert 0 <= just_after < 60
    assert failed.error is not None
    assert status["last_poll"]["error"] == failed.error
    assert value(after_failure, "orders_watcher_lag_seconds", marketplace_id="1") >= 0.3
    assert status["lag_seconds"] >= value(
        after_failure, "orders_watcher_lag_seconds", marketplace_id="1"
    )
    assert value(
        after_failure, "stock_sync_order_last_poll_timestamp_seconds", marketplace_id="1"
    ) == pytest.approx(succeeded.at.timestamp())


async def test_watcher_lag_of_a_replica_that_never_saw_a_successful_poll_is_a_number_not_nan(
    service: Any, simulator_app: FastAPI
) -> None:
    service.simulator.fail_next("/ws/orders", count=10, kind="500")
    failed = await polled(service)
    service.simulator.clear_faults()
    settings = service.settings.model_copy(update={"order_sync_interval_seconds": 60})

    async with another_process(settings, simulator_app) as replica:
        await replica.watcher.update_lag_metric()
        lag = REGISTRY.get_sample_value("orders_watcher_lag_seconds", {"marketplace_id": "1"})
        status = await replica.watcher.status()

    assert failed.error is not None
    # Counted from the replica's start: an alert on the lag fires if its polls keep failing.
    assert lag is not None and not math.isnan(lag) and lag >= 0
    assert status.lag_seconds is not None and status.lag_seconds >= 0


async def test_drift_rows_gauge_holds_the_last_completed_runs_rows(service: Any) -> None:
    simulator = service.simulator
    for index in range(3):
        linked = await link(service.engine, simulator, index, listed_stock=100)
        simulator.set_quantity(linked.listing_uuid, index)

    drifted = await sync(service)
    after_drift = value(await scrape(service), "stock_sync_drift_rows", marketplace_id="1")
    clean = await sync(service)
    after_clean = value(await scrape(service), "stock_sync_drift_rows", marketplace_id="1")

    assert (drifted["drift"]["rows"], after_drift) == (3, 3.0)
    assert (clean["drift"]["rows"], after_clean) == (0, 0.0)


def test_every_exported_metric_is_named_in_the_readme() -> None:
    """Every Counter, Gauge and Histogram defined under app/ appears in the README's table."""
    defined = set()
    for module in (REPOSITORY / "app").rglob("*.py"):
        defined |= set(
            re.findall(
                r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:]+)\"", module.read_text()
            )
        )
    readme = (REPOSITORY / "README.md").read_text()

    assert {"backmarket_budget_wait_seconds", "bulk_sync_page_queue_depth"} <= defined
    assert "orders_watcher_lag_seconds" in defined
    assert sorted(name for name in defined if f"`{name}" not in readme) == []
