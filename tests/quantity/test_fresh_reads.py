"""Reads that make no Back Market call: `GET /variations/{id}/quantity?max_age=S` when the
stored row is fresh enough, and `GET /variations/quantities` (many at once), on SQLite and
MariaDB."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import database_now
from app.models import MarketplaceStock, table_of
from app.services.quantity import refresh_quantity
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    add_linked_listing,
    holding_variation,
    insert_variation,
    seed_stock,
    stock_row,
)
from tests.quantity.test_refresh_cost import counted

pytestmark = pytest.mark.watcher_off(
    "counts the requests and statements of a read; a poll would add its own"
)

BATCH_FIELDS = {
    "variation_id",
    "marketplace_id",
    "reference_id",
    "reference_uuid",
    "sku",
    "publication_state",
    "quantity",
    "locked_stock",
    "available_stock",
    "variation_listed_stock",
    "synced_at",
    "stale",
    "error",
    "age_seconds",
}


def calls(simulator: Any) -> tuple[int, dict[str, int]]:
    """What reached the simulator: the total and the count per endpoint."""
    stats = simulator.stats()
    return stats["total_requests"], stats["by_endpoint"]


def outcome_count(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("stock_sync_quantity_refresh_total", {"outcome": outcome}) or 0.0
    )


async def synced_ago(engine: AsyncEngine, variation_id: int, seconds: float) -> None:
    """Back-date the row's last confirmation by Back Market to `seconds` ago (database clock)."""
    stock = table_of(MarketplaceStock)
    async with engine.begin() as conn:
        now = await database_now(conn)
        await conn.execute(
            sa.update(stock)
            .where(stock.c.variation_id == variation_id, stock.c.marketplace_id == 1)
            .values(last_synced_at=now - timedelta(seconds=seconds))
        )


# --- max_age ---------------------------------------------------------------------------------


async def test_max_age_fresh_answers_the_stored_row_without_calling_back_market(
    service: Any, listing: LinkedListing
) -> None:
    # Stored 3 just now (as a bulk sync writes it); Back Market holds START_QUANTITY.
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3, locked=1)
    before_calls = calls(service.simulator)
    fresh_before = outcome_count("fresh_enough")

    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"max_age": 60}
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["quantity"], body["locked_stock"], body["available_stock"]) == (3, 1, 2)
    assert (body["stale"], body["error"]) == (False, None)
    assert body["synced_at"] is not None
    assert body["reference_uuid"] == listing.id
    assert "age_seconds" not in body  # the single read's answer is the contract's Quantity
    assert calls(service.simulator) == before_calls
    assert outcome_count("fresh_enough") == fresh_before + 1
    row = await stock_row(service.engine, listing.variation_id)
    assert row["listed_stock"] == 3


async def test_max_age_fresh_does_not_wait_for_the_variation_lock(
    service: Any, listing: LinkedListing
) -> None:
    ctx = service.app.state.container.ctx
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)

    async with holding_variation(service, listing.variation_id):
        answer = await refresh_quantity(
            ctx, marketplace_id=1, variation_id=listing.variation_id, max_age=60, lock_timeout=0.05
        )

    # Not the "another stock change is running" stale answer: the lock was never asked for.
    assert (answer.quantity, answer.stale, answer.error) == (3, False, None)
    assert calls(service.simulator)[0] == 0


async def test_max_age_older_than_the_row_reads_back_market_live(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)
    await synced_ago(service.engine, listing.variation_id, 120)
    before_total = calls(service.simulator)[0]

    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"max_age": 60}
    )

    assert response.status_code == 200
    assert response.json()["quantity"] == START_QUANTITY
    assert calls(service.simulator)[0] == before_total + 1
    row = await stock_row(service.engine, listing.variation_id)
    assert row["listed_stock"] == START_QUANTITY


async def test_max_age_zero_always_reads_live(service: Any, listing: LinkedListing) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)
    before_total = calls(service.simulator)[0]

    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"max_age": 0}
    )

    assert response.json()["quantity"] == START_QUANTITY
    assert calls(service.simulator)[0] == before_total + 1


async def test_max_age_of_a_variation_never_synced_reads_live(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"max_age": 86400}
    )

    assert response.json()["quantity"] == START_QUANTITY
    assert calls(service.simulator)[0] == 1


@pytest.mark.parametrize("max_age", ["-1", "86401", "a", "1.5"])
async def test_max_age_outside_0_to_86400_seconds_is_422(
    service: Any, listing: LinkedListing, max_age: str
) -> None:
    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"max_age": max_age}
    )

    assert response.status_code == 422
    assert calls(service.simulator)[0] == 0


async def test_max_age_keeps_the_refresh_errors(service: Any, listing: LinkedListing) -> None:
    await insert_variation(service.engine, variation_id=7, reference_id=None, reference_uuid=None)
    await seed_stock(service.engine, variation_id=7, quantity=2)

    unknown = await service.http.get("/variations/999/quantity", params={"max_age": 60})
    no_reference = await service.http.get("/variations/7/quantity", params={"max_age": 60})
    other_marketplace = await service.http.get(
        f"/variations/{listing.variation_id}/quantity",
        params={"max_age": 60, "marketplace_id": 77},
    )

    assert unknown.status_code == 404
    assert no_reference.status_code == 409
    assert other_marketplace.status_code == 422
    assert calls(service.simulator)[0] == 0


# --- GET /variations/quantities --------------------------------------------------------------


async def test_batch_read_answers_known_ids_once_and_reports_unknown_ones(
    service: Any, listing: LinkedListing
) -> None:
    second = await add_linked_listing(service, variation_id=102, quantity=9)
    never_synced = await add_linked_listing(service, variation_id=103, quantity=4)
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3, locked=1)
    await seed_stock(service.engine, variation_id=second.variation_id, quantity=8)
    await synced_ago(service.engine, second.variation_id, 100)
    before_calls = calls(service.simulator)
    refresh_outcomes_before = {
        outcome: outcome_count(outcome) for outcome in ("fresh_enough", "from_database")
    }

    response = await service.http.get(
        "/variations/quantities", params={"ids": "102, 101,555,103,102,101,2147483647"}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"quantities", "unknown_ids"}
    assert body["unknown_ids"] == [555, 2147483647]
    answers = body["quantities"]
    assert [a["variation_id"] for a in answers] == [102, 101, 103]
    assert all(set(a) == BATCH_FIELDS for a in answers)
    assert all((a["marketplace_id"], a["stale"], a["error"]) == (1, False, None) for a in answers)
    by_id = {a["variation_id"]: a for a in answers}
    first = by_id[listing.variation_id]
    assert (first["quantity"], first["locked_stock"], first["available_stock"]) == (3, 1, 2)
    assert first["variation_listed_stock"] == 3
    assert first["reference_uuid"] == listing.id
    assert first["synced_at"] is not None
    assert 0 <= first["age_seconds"] < 30
    assert by_id[second.variation_id]["quantity"] == 8
    # Back-dated 100 s; whole seconds on MariaDB, so up to a second more.
    assert 100 <= by_id[second.variation_id]["age_seconds"] < 130
    # Never synced: quantity 0 as the single read answers it, and no age.
    unsynced = by_id[never_synced.variation_id]
    assert (unsynced["quantity"], unsynced["locked_stock"], unsynced["available_stock"]) == (
        0,
        0,
        0,
    )
    assert (unsynced["synced_at"], unsynced["age_seconds"]) == (None, None)
    assert unsynced["reference_id"] == str(never_synced.listing_id)
    # No Back Market call, and not counted as a single read.
    assert calls(service.simulator) == before_calls
    assert {
        outcome: outcome_count(outcome) for outcome in ("fresh_enough", "from_database")
    } == refresh_outcomes_before


async def test_batch_read_of_unknown_ids_only_is_200_with_all_of_them_unknown(
    service: Any,
) -> None:
    response = await service.http.get("/variations/quantities", params={"ids": "5,6"})

    assert response.status_code == 200
    assert response.json() == {"quantities": [], "unknown_ids": [5, 6]}


async def test_batch_read_takes_repeated_ids_parameters_and_200_distinct_ids(
    service: Any, listing: LinkedListing
) -> None:
    ids = ",".join(str(n) for n in range(1, 200))  # 199 ids, 101 among them
    response = await service.http.get(
        "/variations/quantities", params=[("ids", ids), ("ids", "101,1000")]
    )

    assert response.status_code == 200
    body = response.json()
    assert [a["variation_id"] for a in body["quantities"]] == [listing.variation_id]
    assert len(body["unknown_ids"]) == 199
    assert body["unknown_ids"][-1] == 1000


async def test_batch_read_of_another_marketplace_answers_its_rows(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)

    response = await service.http.get(
        "/variations/quantities", params={"ids": str(listing.variation_id), "marketplace_id": 4}
    )

    assert response.status_code == 200
    (answer,) = response.json()["quantities"]
    # No stock row on marketplace 4; the variation's total is still its listed stock.
    assert (answer["marketplace_id"], answer["quantity"], answer["age_seconds"]) == (4, 0, None)
    assert answer["variation_listed_stock"] == 3


@pytest.mark.parametrize("ids", ["101", "404"])
async def test_batch_read_of_an_unknown_marketplace_is_422(
    service: Any, listing: LinkedListing, ids: str
) -> None:
    # Known and unknown ids alike: the marketplace is checked either way.
    response = await service.http.get(
        "/variations/quantities", params={"ids": ids, "marketplace_id": 77}
    )

    assert response.status_code == 422
    assert "marketplace 77 does not exist" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "at least one"),
        ({"ids": ""}, "at least one"),
        ({"ids": ",".join(str(n) for n in range(1, 202))}, "at most 200"),
        ({"ids": "1,a"}, "'a' is not an integer"),
        ({"ids": "1.5"}, "not an integer"),
        ({"ids": "0"}, "out of range"),
        ({"ids": "-3"}, "out of range"),
        ({"ids": "2147483648"}, "out of range"),
        ({"ids": "1,,2"}, "empty item"),
    ],
)
async def test_batch_read_refuses_bad_ids_with_422(
    service: Any, params: dict[str, str], words: str
) -> None:
    response = await service.http.get("/variations/quantities", params=params)

    assert response.status_code == 422
    assert words in response.json()["detail"]
    assert calls(service.simulator)[0] == 0


async def test_openapi_documents_max_age_and_the_batch_read(service: Any) -> None:
    spec = (await service.http.get("/openapi.json")).json()

    single = spec["paths"]["/variations/{variation_id}/quantity"]["get"]
    max_age = next(p for p in single["parameters"] if p["name"] == "max_age")
    assert max_age["schema"]["anyOf"][0] == {"type": "integer", "maximum": 86400, "minimum": 0}
    batch = spec["paths"]["/variations/quantities"]["get"]
    assert set(batch["responses"]) == {"200", "401", "422"}
    assert {p["name"] for p in batch["parameters"]} == {"ids", "marketplace_id"}


# --- cost --------------------------------------------------------------------------------------


async def test_batch_read_is_one_statement_and_a_fresh_read_one_more_than_none(
    service: Any, listing: LinkedListing
) -> None:

    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)
    ids = ",".join(str(n) for n in range(1, 201))

    with counted(service.engine) as batch:
        assert (await service.http.get("/variations/quantities", params={"ids": ids})).is_success
    with counted(service.engine) as fresh:
        response = await service.http.get(
            f"/variations/{listing.variation_id}/quantity", params={"max_age": 60}
        )
        assert response.json()["quantity"] == 3
    with counted(service.engine) as all_unknown:
        assert (await service.http.get("/variations/quantities", params={"ids": "7"})).is_success

    # SQLite begins every transaction with a BEGIN (IMMEDIATE, DEFERRED for reads; app.db):
    # not a query.
    assert (queries(batch), batch.checkouts) == (1, 1), batch.describe()
    assert (queries(fresh), fresh.checkouts) == (1, 1), fresh.describe()
    # No row at all: the marketplace is checked by a second statement.
    assert queries(all_unknown) == 2, all_unknown.describe()


def queries(work: Any) -> int:
    return sum(1 for statement in work.statements if not statement.startswith("BEGIN"))
