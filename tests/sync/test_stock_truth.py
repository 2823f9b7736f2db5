"""Stock truth of a bulk sync: totals re-established for every variation it observes, the back
office's soft-deleted rows left alone, and the drift it found reported with the run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app.models import utcnow
from tests.sync.support import (
    add_stock,
    link,
    scalar,
    stock_row,
    sync,
    variation_row,
)

OTHER_MARKETPLACE = 4


async def set_total(engine: Any, variation_id: int, total: int) -> None:
    """What the back office's older code did: set the variation's total directly."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE variation SET listed_stock = :total WHERE id = :id"),
            {"total": total, "id": variation_id},
        )


async def soft_delete(engine: Any, table: str, **where: int) -> None:
    condition = " AND ".join(f"{column} = :{column}" for column in where)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(f"UPDATE {table} SET deleted_at = :now WHERE {condition}"),
            {"now": utcnow(), **where},
        )


async def confirm_at(engine: Any, variation_id: int, moment: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE marketplace_stock SET last_synced_at = :moment "
                "WHERE variation_id = :v AND marketplace_id = 1"
            ),
            {"moment": moment, "v": variation_id},
        )


# -- totals ---------------------------------------------------------------------------------------


async def test_a_wrong_total_is_corrected_although_the_back_market_quantity_did_not_change(
    service: Any,
) -> None:
    simulator = service.simulator
    quantity = simulator.quantity_of(simulator.store.identity(0).id)
    wrong = await link(service.engine, simulator, 0, listed_stock=quantity)
    await add_stock(
        service.engine, variation_id=wrong.variation_id, listed_stock=7, marketplace_id=4
    )
    await set_total(service.engine, wrong.variation_id, 5)
    right = await link(
        service.engine,
        simulator,
        1,
        listed_stock=simulator.quantity_of(simulator.store.identity(1).id),
    )

    run = await sync(service)

    assert (run["updated"], run["unchanged"]) == (0, 2)
    assert (await variation_row(service.engine, wrong.variation_id))["listed_stock"] == quantity + 7
    assert run["variations_resummed"] == 1
    assert (await variation_row(service.engine, right.variation_id))["listed_stock"] == (
        simulator.quantity_of(right.listing_uuid)
    )
    stored = (await service.http.get(f"/sync/runs/{run['id']}")).json()["run"]
    assert stored["variations_resummed"] == 1


async def test_a_dry_run_corrects_no_total(service: Any) -> None:
    simulator = service.simulator
    quantity = simulator.quantity_of(simulator.store.identity(0).id)
    wrong = await link(service.engine, simulator, 0, listed_stock=quantity)
    await set_total(service.engine, wrong.variation_id, quantity + 3)

    run = await sync(service, dry_run=True)

    assert run["variations_resummed"] == 0
    assert (await variation_row(service.engine, wrong.variation_id))["listed_stock"] == quantity + 3


# -- soft-deleted rows ----------------------------------------------------------------------------


async def test_a_soft_deleted_variation_is_not_matched_and_its_stock_not_written(
    service: Any,
) -> None:
    simulator = service.simulator
    deleted = await link(service.engine, simulator, 0, listed_stock=1)
    simulator.set_quantity(deleted.listing_uuid, 40)
    await set_total(service.engine, deleted.variation_id, 9)
    await soft_delete(service.engine, "variation", id=deleted.variation_id)
    kept = await link(service.engine, simulator, 1, listed_stock=1)

    run = await sync(service)

    assert run["matched"] == 1
    assert run["not_found"] == 0
    assert (await stock_row(service.engine, deleted.variation_id))["listed_stock"] == 1
    assert (await variation_row(service.engine, deleted.variation_id))["listed_stock"] == 9
    history = await scalar(
        service.engine,
        "SELECT COUNT(*) FROM marketplace_stock_history WHERE variation_id = :v",
        v=deleted.variation_id,
    )
    assert history == 0
    assert (await stock_row(service.engine, kept.variation_id))["listed_stock"] == (
        simulator.quantity_of(kept.listing_uuid)
    )


async def test_a_soft_deleted_stock_row_is_neither_written_nor_counted_in_the_total(
    service: Any,
) -> None:
    simulator = service.simulator
    # Its Back Market row deleted: that row stays as it was, the other marketplace's counts.
    row_deleted = await link(service.engine, simulator, 0, listed_stock=3)
    simulator.set_quantity(row_deleted.listing_uuid, 40)
    await add_stock(
        service.engine, variation_id=row_deleted.variation_id, listed_stock=6, marketplace_id=4
    )
    await soft_delete(
        service.engine, "marketplace_stock", variation_id=row_deleted.variation_id, marketplace_id=1
    )
    # Its other marketplace's row deleted: the Back Market row alone makes the total.
    other_deleted = await link(service.engine, simulator, 1, listed_stock=2)
    simulator.set_quantity(other_deleted.listing_uuid, 11)
    await add_stock(
        service.engine, variation_id=other_deleted.variation_id, listed_stock=50, marketplace_id=4
    )
    await soft_delete(
        service.engine,
        "marketplace_stock",
        variation_id=other_deleted.variation_id,
        marketplace_id=OTHER_MARKETPLACE,
    )

    run = await sync(service)

    assert run["updated"] == 1
    kept_row = await stock_row(service.engine, row_deleted.variation_id)
    assert (kept_row["listed_stock"], kept_row["deleted_at"] is not None) == (3, True)
    assert (await variation_row(service.engine, row_deleted.variation_id))["listed_stock"] == 6
    assert (await stock_row(service.engine, other_deleted.variation_id))["listed_stock"] == 11
    assert (await variation_row(service.engine, other_deleted.variation_id))["listed_stock"] == 11
    assert run["variations_resummed"] == 2


# -- drift ----------------------------------------------------------------------------------------


async def test_drift_counts_the_rows_written_from_another_value_than_the_live_one(
    service: Any,
) -> None:
    simulator = service.simulator
    long_ago = datetime(2026, 1, 2, 3, 4, 5)
    recently = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    higher = await link(service.engine, simulator, 0, listed_stock=1)
    simulator.set_quantity(higher.listing_uuid, 0)
    # Stored 1 more than live: 1 unit, confirmed long ago.
    await add_stock(
        service.engine, variation_id=higher.variation_id, listed_stock=3, marketplace_id=4
    )
    await confirm_at(service.engine, higher.variation_id, long_ago)
    lower = await link(service.engine, simulator, 1, listed_stock=2)
    simulator.set_quantity(lower.listing_uuid, 9)
    await confirm_at(service.engine, lower.variation_id, recently)
    much_higher = await link(service.engine, simulator, 2, listed_stock=30)
    simulator.set_quantity(much_higher.listing_uuid, 4)
    same = await link(service.engine, simulator, 3, listed_stock=6)
    simulator.set_quantity(same.listing_uuid, 6)
    created = await link(service.engine, simulator, 4)  # no stock row yet: nothing drifted

    run = await sync(service)

    assert run["updated"] == 4
    drift = run["drift"]
    assert {key: drift[key] for key in ("rows", "higher", "lower", "units")} == {
        "rows": 3,
        "higher": 2,
        "lower": 1,
        "units": 1 + 7 + 26,
    }
    assert drift["oldest_confirmed_at"] == long_ago.replace(tzinfo=UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert [
        (example["variation_id"], example["stored"], example["live"])
        for example in drift["examples"]
    ] == [
        (much_higher.variation_id, 30, 4),
        (lower.variation_id, 2, 9),
        (higher.variation_id, 1, 0),
    ]
    assert drift["examples"][2]["confirmed_at"] == drift["oldest_confirmed_at"]
    assert drift["examples"][0]["confirmed_at"] is None
    assert created.variation_id not in {example["variation_id"] for example in drift["examples"]}
    listed = (await service.http.get("/sync/runs")).json()["runs"][0]
    assert listed["drift"] == drift


async def test_a_row_skipped_as_newer_is_no_drift(service: Any) -> None:
    simulator = service.simulator
    # Listings 0-49 are page 1.
    pushed = await link(service.engine, simulator, 10, listed_stock=1)
    drifted = await link(service.engine, simulator, 11, listed_stock=1)
    simulator.set_quantity(pushed.listing_uuid, 30)
    simulator.set_quantity(drifted.listing_uuid, 31)
    hold = simulator.hold("/ws/listings", page=1)

    finished = asyncio.create_task(sync(service))
    await simulator.wait_held(hold)
    # Another writer changes the row while its page is read: the run leaves it alone.
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
    assert (run["drift"]["rows"], run["drift"]["units"]) == (1, 30)
    assert [example["variation_id"] for example in run["drift"]["examples"]] == [
        drifted.variation_id
    ]


async def test_drift_keeps_the_twenty_largest_examples_largest_first(service: Any) -> None:
    simulator = service.simulator
    linked = []
    for index in range(25):
        variation = await link(service.engine, simulator, index, listed_stock=100)
        simulator.set_quantity(variation.listing_uuid, index)
        linked.append(variation)

    run = await sync(service)

    drift = run["drift"]
    assert drift["rows"] == 25
    assert drift["higher"] == 25
    assert drift["units"] == sum(100 - index for index in range(25))
    assert [example["live"] for example in drift["examples"]] == list(range(20))


async def test_a_second_run_over_unchanged_stock_finds_no_drift(service: Any) -> None:
    simulator = service.simulator
    variation = await link(service.engine, simulator, 0, listed_stock=50)
    simulator.set_quantity(variation.listing_uuid, 2)
    first = await sync(service)

    second = await sync(service)

    assert first["drift"]["rows"] == 1
    assert second["drift"] == {
        "rows": 0,
        "higher": 0,
        "lower": 0,
        "units": 0,
        "oldest_confirmed_at": None,
        "examples": [],
    }
