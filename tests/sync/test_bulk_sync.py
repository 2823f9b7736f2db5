"""The bulk sync run against the simulator (and a scripted feed): what it reads, writes, reports."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.config import Settings
from app.models import RunTrigger
from app.services.context import ServiceContext
from app.services.locks import NamedLocks, engine_lock_name
from app.services.marketplace import MarketplaceRegistry
from app.services.sync import SnapshotClock, VariationIdSet, bulk_lock_name, run_bulk_sync
from app.services.sync import batch as batch_module
from tests.sync.support import (
    ScriptedFeed,
    add_stock,
    add_variation,
    age_stock_changes,
    link,
    listing,
    scalar,
    stock_row,
    sync,
    variation_row,
    wait_for_run,
)

pytestmark = pytest.mark.watcher_off(
    "counts the simulator's requests; a scheduled orders read would be one more"
)

MARKETS = ("fr-fr", "de-de", "es-es")
THREE_MARKETS = {
    "backmarket_requests_per_10s": 10_000,
    "backmarket_max_attempts": 2,
    "backmarket_markets": ",".join(MARKETS),
}


async def history_count(engine: Any, **where: Any) -> int:
    sql = "SELECT COUNT(*) FROM marketplace_stock_history"
    if where:
        sql += " WHERE " + " AND ".join(f"{column} = :{column}" for column in where)
    return int(await scalar(engine, sql, **where))


# -- calls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [THREE_MARKETS])
@pytest.mark.parametrize("listings", [120, 101, 50, 1])
async def test_clean_run_makes_exactly_one_listing_call_per_fifty_listings_per_market(
    service: Any, listings: int
) -> None:
    run = await sync(service)

    expected = math.ceil(listings / 50) * len(MARKETS)
    stats = service.simulator.stats()
    assert stats["by_endpoint"] == {"GET /ws/listings 200": expected}
    assert stats["total_requests"] == expected
    assert run["status"] == "completed"
    assert run["api_calls"] == expected
    assert run["pages_fetched"] == run["pages_expected"] == expected
    assert run["listings_seen"] == listings
    assert {market: entry["count"] for market, entry in run["markets"].items()} == dict.fromkeys(
        MARKETS, listings
    )


# -- matching and writing ------------------------------------------------------------------------


async def test_listing_matches_a_variation_by_reference_uuid_and_by_reference_id(
    service: Any,
) -> None:
    by_uuid = await link(service.engine, service.simulator, 0, by="uuid")
    by_listing_id = await link(service.engine, service.simulator, 1, by="listing_id")
    by_both = await link(service.engine, service.simulator, 2, by="both")

    run = await sync(service)

    assert run["matched"] == 3
    for linked in (by_uuid, by_listing_id, by_both):
        row = await stock_row(service.engine, linked.variation_id)
        assert row["listed_stock"] == service.simulator.quantity_of(linked.listing_uuid)
        variation = await variation_row(service.engine, linked.variation_id)
        assert variation["sku"] == linked.sku


@pytest.mark.parametrize("settings_overrides", [THREE_MARKETS])
async def test_listing_seen_in_several_markets_is_applied_once(service: Any) -> None:
    linked = [await link(service.engine, service.simulator, index) for index in range(5)]

    run = await sync(service)

    assert run["listings_seen"] == 120
    assert all(run["markets"][market]["listings"] == 120 for market in MARKETS)
    assert run["matched"] == 5
    assert run["updated"] == 5
    assert await history_count(service.engine) == 5
    assert run["errors"] == []
    for item in linked:
        assert await history_count(service.engine, variation_id=item.variation_id) == 1


async def test_markets_disagreeing_on_a_quantity_are_recorded_and_one_value_applied(
    engine: Any, make_settings: Callable[..., Settings], locks: NamedLocks
) -> None:
    target = str(uuid.uuid4())
    variation_id = await add_variation(engine, reference_uuid=target)
    feed = ScriptedFeed(
        {
            "fr-fr": [[listing(target, listing_id=7, quantity=4)]],
            "de-de": [[listing(target, listing_id=7, quantity=6)]],
        }
    )

    run = await run_bulk_sync(
        ServiceContext(
            settings=make_settings(backmarket_markets="fr-fr,de-de"),
            engine=engine,
            marketplaces=MarketplaceRegistry([feed]),  # type: ignore[list-item]
            locks=locks,
        )
    )

    assert run.status == "completed"
    assert run.listings_seen == 1
    assert run.updated == 1
    [disagreement] = [e for e in run.errors if e["kind"] == "quantity_disagreement"]
    assert disagreement["quantities"] == {"fr-fr": 4, "de-de": 6}
    row = await stock_row(engine, variation_id)
    assert row["listed_stock"] == disagreement["applied"]
    assert run.markets["fr-fr"]["quantity_disagreements"] == 1


async def test_invariants_hold_after_the_run(service: Any) -> None:
    heavily_locked = await link(
        service.engine, service.simulator, 0, listed_stock=1, locked_stock=1000
    )
    await add_stock(
        service.engine, variation_id=heavily_locked.variation_id, listed_stock=5, marketplace_id=4
    )
    await link(service.engine, service.simulator, 1, listed_stock=3, locked_stock=1)
    await link(service.engine, service.simulator, 2)

    run = await sync(service)

    assert run["matched"] == 3
    row = await stock_row(service.engine, heavily_locked.variation_id)
    assert row["locked_stock"] == 1000
    assert row["available_stock"] == 0
    drifted = await scalar(
        service.engine,
        "SELECT COUNT(*) FROM marketplace_stock "
        "WHERE available_stock <> CASE WHEN listed_stock > locked_stock "
        "THEN listed_stock - locked_stock ELSE 0 END",
    )
    assert drifted == 0
    unsummed = await scalar(
        service.engine,
        "SELECT COUNT(*) FROM variation v WHERE v.listed_stock <> "
        "(SELECT COALESCE(SUM(s.listed_stock), 0) FROM marketplace_stock s "
        "WHERE s.variation_id = v.id)",
    )
    assert unsummed == 0
    variation = await variation_row(service.engine, heavily_locked.variation_id)
    assert (
        variation["listed_stock"] == service.simulator.quantity_of(heavily_locked.listing_uuid) + 5
    )


async def test_history_rows_are_written_only_for_changed_rows(service: Any) -> None:
    simulator = service.simulator
    same = await link(
        service.engine,
        simulator,
        0,
        listed_stock=simulator.quantity_of(simulator.store.identity(0).id),
    )
    changed = await link(service.engine, simulator, 1)
    await add_stock(
        service.engine,
        variation_id=changed.variation_id,
        listed_stock=simulator.quantity_of(changed.listing_uuid) + 1,
    )
    created = await link(service.engine, simulator, 2)

    first = await sync(service)

    assert (first["updated"], first["unchanged"]) == (2, 1)
    assert await history_count(service.engine) == 2
    assert await history_count(service.engine, variation_id=same.variation_id) == 0
    assert (
        await history_count(service.engine, change_type="bulk_sync", sync_run_id=first["id"]) == 2
    )
    async with service.engine.connect() as conn:
        entry = (
            (
                await conn.execute(
                    sa.text(
                        "SELECT listed_stock_before, listed_stock_after, quantity_change "
                        "FROM marketplace_stock_history WHERE variation_id = :v"
                    ),
                    {"v": changed.variation_id},
                )
            )
            .mappings()
            .one()
        )
    quantity = simulator.quantity_of(changed.listing_uuid)
    assert dict(entry) == {
        "listed_stock_before": quantity + 1,
        "listed_stock_after": quantity,
        "quantity_change": -1,
    }
    assert await history_count(service.engine, variation_id=created.variation_id) == 1

    await age_stock_changes(service.engine)
    second = await sync(service)

    assert (second["updated"], second["unchanged"]) == (0, 3)
    assert await history_count(service.engine) == 2


# -- no lost updates -----------------------------------------------------------------------------


async def test_row_changed_after_its_page_was_requested_is_skipped_as_newer(service: Any) -> None:
    simulator = service.simulator
    # Listings 0-49 are page 1.
    pushed = await link(service.engine, simulator, 10, listed_stock=1)
    untouched = await link(service.engine, simulator, 11, listed_stock=1)
    simulator.set_quantity(pushed.listing_uuid, 30)
    simulator.set_quantity(untouched.listing_uuid, 31)
    hold = simulator.hold("/ws/listings", page=1)

    finished = asyncio.create_task(sync(service))
    await simulator.wait_held(hold)
    # Another writer (a refresh, add-quantity, the seed app) changes the row meanwhile.
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE marketplace_stock SET listed_stock = 77, available_stock = 77 "
                "WHERE variation_id = :v"
            ),
            {"v": pushed.variation_id},
        )
    simulator.release(hold)
    run = await finished

    assert run["skipped_newer"] == 1
    assert (await stock_row(service.engine, pushed.variation_id))["listed_stock"] == 77
    assert (await stock_row(service.engine, untouched.variation_id))["listed_stock"] == 31
    assert await history_count(service.engine, variation_id=pushed.variation_id) == 0


# -- not found, unknown, import -------------------------------------------------------------------


async def test_variations_missing_from_a_complete_feed_are_counted_not_found_and_left_untouched(
    service: Any,
) -> None:
    await link(service.engine, service.simulator, 0)
    gone_by_uuid = await add_variation(service.engine, reference_uuid=str(uuid.uuid4()))
    gone_by_id = await add_variation(service.engine, reference_id="999")
    await add_variation(service.engine, sku="NOT-ON-BACK-MARKET")
    for variation_id, stock in ((gone_by_uuid, 9), (gone_by_id, 4)):
        await add_stock(service.engine, variation_id=variation_id, listed_stock=stock)
    before = await stock_row(service.engine, gone_by_uuid)

    run = await sync(service)

    assert run["status"] == "completed"
    assert run["not_found"] == 2
    after = await stock_row(service.engine, gone_by_uuid)
    assert after["listed_stock"] == 9
    assert after["stock_changed_at"] == before["stock_changed_at"]
    assert (await stock_row(service.engine, gone_by_id))["listed_stock"] == 4
    assert await history_count(service.engine, variation_id=gone_by_uuid) == 0


async def test_unknown_listings_are_counted_and_not_imported_by_default(service: Any) -> None:
    await link(service.engine, service.simulator, 0)
    await link(service.engine, service.simulator, 1)

    run = await sync(service)

    assert run["unknown_listings"] == 118
    assert run["imported"] == 0
    assert await scalar(service.engine, "SELECT COUNT(*) FROM variation") == 2


async def test_import_unknown_creates_a_variation_and_its_stock_row_per_unknown_listing(
    service: Any,
) -> None:
    simulator = service.simulator
    await link(service.engine, simulator, 0)
    await link(service.engine, simulator, 1)

    run = await sync(service, import_unknown=True)

    assert (run["unknown_listings"], run["imported"]) == (118, 118)
    assert await scalar(service.engine, "SELECT COUNT(*) FROM variation") == 120
    assert await scalar(service.engine, "SELECT COUNT(*) FROM marketplace_stock") == 120
    identity = simulator.store.identity(57)
    async with service.engine.connect() as conn:
        imported = (
            (
                await conn.execute(
                    sa.text(
                        "SELECT v.reference_id, v.sku, v.listed_stock, s.listed_stock AS stock "
                        "FROM variation v JOIN marketplace_stock s ON s.variation_id = v.id "
                        "WHERE v.reference_uuid = :uuid"
                    ),
                    {"uuid": identity.id},
                )
            )
            .mappings()
            .one()
        )
    quantity = simulator.quantity_of(identity.id)
    assert dict(imported) == {
        "reference_id": str(identity.listing_id),
        "sku": identity.sku,
        "listed_stock": quantity,
        "stock": quantity,
    }

    await age_stock_changes(service.engine)
    again = await sync(service, import_unknown=True)

    assert (again["matched"], again["unknown_listings"], again["imported"]) == (120, 0, 0)
    assert again["unchanged"] == 120


async def test_dry_run_writes_no_stock_but_reports_what_would_change(service: Any) -> None:
    stocked = await link(service.engine, service.simulator, 0, listed_stock=999)
    unstocked = await link(service.engine, service.simulator, 1)

    run = await sync(service, dry_run=True, import_unknown=True)

    assert run["dry_run"] is True
    assert run["status"] == "completed"
    assert (run["matched"], run["updated"], run["imported"]) == (2, 2, 118)
    assert (await stock_row(service.engine, stocked.variation_id))["listed_stock"] == 999
    assert await stock_row(service.engine, unstocked.variation_id) is None
    assert await history_count(service.engine) == 0
    assert await scalar(service.engine, "SELECT COUNT(*) FROM variation") == 2
    assert await scalar(service.engine, "SELECT dry_run FROM stock_sync_logs") in (1, True)


# -- partial and failed runs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "backmarket_requests_per_10s": 10_000,
            "backmarket_max_attempts": 2,
            "backmarket_markets": "fr-fr,en-us",
        }
    ],
)
async def test_a_market_that_cannot_be_read_makes_the_run_partial_and_keeps_what_was_read(
    service: Any,
) -> None:
    linked = await link(service.engine, service.simulator, 0, listed_stock=999)
    gone = await add_variation(service.engine, reference_uuid=str(uuid.uuid4()))
    await add_stock(service.engine, variation_id=gone, listed_stock=5)

    run = await sync(service)

    # The simulator knows no en-us market: Back Market's 400 for an unsupported language.
    assert run["status"] == "partial"
    assert run["markets"]["fr-fr"]["status"] == "completed"
    assert run["markets"]["en-us"]["status"] == "failed"
    assert [e["market"] for e in run["errors"] if e["kind"] == "market_failed"] == ["en-us"]
    assert run["updated"] == 1
    assert (await stock_row(service.engine, linked.variation_id))["listed_stock"] != 999
    assert run["not_found"] == 0
    assert (await stock_row(service.engine, gone))["listed_stock"] == 5


async def test_a_page_still_failing_after_retries_makes_the_run_partial(service: Any) -> None:
    simulator = service.simulator
    on_page_2 = await link(service.engine, simulator, 60, listed_stock=999)
    on_page_3 = await link(service.engine, simulator, 110, listed_stock=999)
    simulator.fail_next("/ws/listings", count=2, kind="503", page=2)

    run = await sync(service)

    assert run["status"] == "partial"
    [failure] = run["errors"]
    assert (failure["kind"], failure["market"], failure["page"]) == ("page_failed", "fr-fr", 2)
    assert run["markets"]["fr-fr"]["status"] == "partial"
    assert (await stock_row(service.engine, on_page_2.variation_id))["listed_stock"] == 999
    assert (await stock_row(service.engine, on_page_3.variation_id))["listed_stock"] != 999
    # Page 1, page 3 and both attempts at page 2.
    assert run["api_calls"] == simulator.stats()["total_requests"] == 4
    assert run["pages_fetched"] == 2
    assert run["pages_expected"] == 3


async def test_a_short_page_makes_the_run_partial_not_a_smaller_catalogue(service: Any) -> None:
    service.simulator.fail_next("/ws/listings", count=1, kind="truncate", page=2)
    gone = await add_variation(service.engine, reference_uuid=str(uuid.uuid4()))

    run = await sync(service)

    assert run["status"] == "partial"
    assert [e["kind"] for e in run["errors"]] == ["incomplete_feed"]
    assert run["listings_seen"] == 95
    assert run["not_found"] == 0
    assert await stock_row(service.engine, gone) is None


async def test_a_run_that_can_read_nothing_is_failed(service: Any) -> None:
    service.simulator.fail_next("/ws/listings", count=10, kind="500")

    run = await sync(service)

    assert run["status"] == "failed"
    assert run["pages_fetched"] == 0
    assert run["api_calls"] == 2
    assert run["markets"]["fr-fr"]["status"] == "failed"
    assert run["errors"][0]["kind"] == "market_failed"


async def test_a_crash_mid_run_leaves_a_failed_run_and_keeps_what_was_written(
    engine: Any, make_settings: Callable[..., Settings], locks: NamedLocks
) -> None:
    target = str(uuid.uuid4())
    variation_id = await add_variation(engine, reference_uuid=target)
    feed = ScriptedFeed(
        {"fr-fr": [[listing(target, listing_id=1, quantity=8)], RuntimeError("bug")]}
    )

    run = await run_bulk_sync(
        ServiceContext(
            settings=make_settings(),
            engine=engine,
            marketplaces=MarketplaceRegistry([feed]),  # type: ignore[list-item]
            locks=locks,
        )
    )

    assert run.status == "failed"
    assert run.errors[-1]["kind"] == "crash"
    assert "RuntimeError: bug" in run.errors[-1]["message"]
    assert (await stock_row(engine, variation_id))["listed_stock"] == 8
    assert (
        await scalar(engine, "SELECT status FROM stock_sync_logs WHERE id = :id", id=run.id)
        == "failed"
    )


# -- the run record ------------------------------------------------------------------------------


async def test_run_record_fills_the_seed_applications_columns(service: Any) -> None:
    await link(service.engine, service.simulator, 0, listed_stock=999)
    unchanged_quantity = service.simulator.quantity_of(service.simulator.store.identity(1).id)
    await link(service.engine, service.simulator, 1, listed_stock=unchanged_quantity)

    run = await sync(service)

    async with service.engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.text("SELECT * FROM stock_sync_logs WHERE id = :id"), {"id": run["id"]}
                )
            )
            .mappings()
            .one()
        )
    assert row["status"] == "completed"
    assert row["trigger"] == RunTrigger.API.value
    assert row["total_records"] == run["listings_seen"] == 120
    assert row["synced_count"] == run["updated"] == 1
    assert row["skipped_count"] == run["unchanged"] + run["skipped_newer"] == 1
    assert row["error_count"] == 0
    assert row["completed_at"] is not None
    assert row["summary"].startswith("completed: 120 listings")
    assert row["owner"]


async def test_progress_is_visible_while_the_run_is_going(service: Any) -> None:
    hold = service.simulator.hold("/ws/listings", page=3)

    response = await service.http.post("/sync/bulk")
    assert response.status_code == 202
    started = response.json()["run"]
    assert started["status"] == "running"
    await service.simulator.wait_held(hold)
    during = await wait_for_run(service, started["id"], until=lambda run: run["pages_fetched"] == 2)

    assert during["status"] == "running"
    assert during["pages_expected"] == 3
    assert during["listings_seen"] == 100
    assert during["markets"]["fr-fr"]["status"] == "running"
    assert during["finished_at"] is None

    service.simulator.release(hold)
    finished = await wait_for_run(service, started["id"])
    assert finished["status"] == "completed"
    assert finished["pages_fetched"] == 3
    assert finished["duration_seconds"] is not None


async def test_losing_the_database_lock_stops_the_run_as_failed(service: Any) -> None:
    if service.engine.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("the lock is a database lock only on MySQL/MariaDB")
    hold = service.simulator.hold("/ws/listings", page=2)
    started = (await service.http.post("/sync/bulk")).json()["run"]
    await service.simulator.wait_held(hold)

    # The server drops the connection holding GET_LOCK (a restart, a network cut, a kill).
    async with service.engine.connect() as conn:
        holder = (
            await conn.execute(
                sa.text("SELECT IS_USED_LOCK(:name)"),
                {"name": engine_lock_name(bulk_lock_name(1), service.engine)},
            )
        ).scalar()
        await conn.execute(sa.text(f"KILL {int(holder)}"))
    service.simulator.release(hold)
    finished = await wait_for_run(service, started["id"])

    assert finished["status"] == "failed"
    assert finished["errors"][-1]["kind"] == "lock_lost"
    async with NamedLocks(service.engine).hold(bulk_lock_name(1), timeout=0) as held:
        assert await held.still_held()


# -- building blocks -----------------------------------------------------------------------------


def test_cutoff_is_the_fetch_time_in_the_database_clock_moved_back_by_the_margin() -> None:
    clock = SnapshotClock(offset=timedelta(seconds=2), margin=timedelta(milliseconds=500))
    fetched_at = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert clock.cutoff(fetched_at) == datetime(2026, 1, 1, 12, 0, 1, 500_000)


def test_matched_variation_ids_are_counted_once_each() -> None:
    matched = VariationIdSet()
    for variation_id in (7, 7, 0, 1_000_003, 8):
        matched.add(variation_id)

    assert len(matched) == 4
    assert 1_000_003 in matched
    assert 7 in matched
    assert 6 not in matched
    assert 5_000_000 not in matched


async def test_a_batch_committed_whose_answer_was_lost_still_counts_in_the_failed_run(
    engine: Any,
    make_settings: Callable[..., Settings],
    locks: NamedLocks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The connection dies during COMMIT: the batch (and the run's counts saved with it) is in
    # the database, yet the writer sees an error and the run fails.
    target = str(uuid.uuid4())
    variation_id = await add_variation(engine, reference_uuid=target)
    real_in_transaction = batch_module.in_transaction

    async def commit_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        await real_in_transaction(*args, **kwargs)
        raise sa.exc.OperationalError("COMMIT", {}, Exception(2013, "Lost connection"))

    monkeypatch.setattr(batch_module, "in_transaction", commit_then_lose_the_answer)
    feed = ScriptedFeed({"fr-fr": [[listing(target, listing_id=1, quantity=8)]]})

    run = await run_bulk_sync(
        ServiceContext(
            settings=make_settings(),
            engine=engine,
            marketplaces=MarketplaceRegistry([feed]),  # type: ignore[list-item]
            locks=locks,
        )
    )

    assert run.status == "failed"
    assert (await stock_row(engine, variation_id))["listed_stock"] == 8
    assert (run.matched, run.updated) == (1, 1)
    stored = await scalar(engine, "SELECT updated FROM stock_sync_logs WHERE id = :id", id=run.id)
    assert stored == 1


async def test_a_cancelled_shutdown_does_not_cancel_the_runs_a_second_time(service: Any) -> None:
    # On SQLite a second cancel while the first one's statement runs leaves a connection's
    # close pending forever; the runner cancels each run once and waits for it.
    runner = service.app.state.container.runner
    hold = service.simulator.hold("/ws/listings", page=2)
    started = (await service.http.post("/sync/bulk")).json()["run"]
    await service.simulator.wait_held(hold)
    (run_task,) = runner._tasks

    shutdown = asyncio.create_task(runner.shutdown())
    await asyncio.sleep(0)  # the shutdown cancels the run and waits for it
    shutdown.cancel()  # e.g. a lifespan manager's shutdown timeout
    await asyncio.gather(shutdown, return_exceptions=True)

    assert run_task.cancelling() == 1
    service.simulator.release(hold)
    await asyncio.wait([run_task])
    finished = await wait_for_run(service, started["id"])
    assert finished["status"] == "failed"
