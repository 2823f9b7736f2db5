"""Marketplace 4 configured as Refurbed (MARKETPLACE_4_*, its simulator on a socket), on SQLite
and MariaDB: its orders watcher sees a Refurbed sale and re-reads the offer, its order lines and
claims are its own (never marketplace 1's), and twenty concurrent additions on one offer land."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import OrderLineSeen, table_of
from app.services import marketplace as mp
from app.services import sales
from app.services.orders.poll import WATCHER_CLAIM
from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.testing import RunningRefurbedSimulator
from tests.quantity.support import history_rows, insert_variation, stock_row

REFURBED = 4
TOKEN = "refurbed-watcher-token"
SKU = "SKU-0000004"
VARIATION = 401
START_STOCK = 6
BATCH_GET = "OfferService/BatchGetOffers"

lines_table = table_of(OrderLineSeen)


@pytest.fixture
def refurbed() -> Iterator[RunningRefurbedSimulator]:
    with RunningRefurbedSimulator(RefurbedSimulatorConfig(offers=10, token=TOKEN)) as simulator:
        simulator.state.set_stock(SKU, START_STOCK)
        yield simulator


@pytest.fixture
def settings_overrides(refurbed: RunningRefurbedSimulator) -> dict[str, Any]:
    return {
        "backmarket_requests_per_10s": 10_000,
        "backmarket_max_attempts": 2,
        "marketplaces": {
            REFURBED: {
                "kind": "refurbed",
                "token": TOKEN,
                "base_url": refurbed.base_url,
                "requests_per_10s": 10_000,
            }
        },
    }


@pytest.fixture
async def variation(service: Any) -> int:
    """A variation Refurbed knows by its SKU, its marketplace 4 stock read once."""
    await insert_variation(
        service.engine, variation_id=VARIATION, reference_id="999999", reference_uuid=None, sku=SKU
    )
    read = await service.http.get(
        f"/variations/{VARIATION}/quantity", params={"marketplace_id": REFURBED}
    )
    assert read.status_code == 200, read.text
    return VARIATION


def place_order(
    refurbed: RunningRefurbedSimulator, units: int, *, sku: str = SKU
) -> dict[str, Any]:
    """An order through the simulator's control API, as a customer's would arrive."""
    answer = httpx.post(
        f"{refurbed.base_url}/_sim/orders", json={"items": [{"offer": sku, "units": units}]}
    )
    answer.raise_for_status()
    order: dict[str, Any] = answer.json()
    return order


async def poll(service: Any) -> Any:
    return await service.app.state.container.watchers[REFURBED].poll()


async def line_rows(engine: AsyncEngine) -> list[tuple[int, int, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(
                lines_table.c.marketplace_id, lines_table.c.line_id, lines_table.c.compensated_by
            ).order_by(lines_table.c.marketplace_id, lines_table.c.line_id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_refurbed_sale_is_seen_by_marketplace_4s_watcher_once(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    order = place_order(refurbed, 1)
    item_id = int(order["items"][0]["id"])
    assert refurbed.state.stock_of(SKU) == START_STOCK - 1
    refurbed.state.reset_stats()

    outcome = await poll(service)

    assert outcome is not None and outcome.error is None
    assert outcome.listings_refreshed == 1
    assert refurbed.state.stats()["by_method"].get(BATCH_GET) == 1
    assert (await stock_row(service.engine, variation, REFURBED))["listed_stock"] == START_STOCK - 1
    order_sync = [
        h for h in await history_rows(service.engine, variation) if h["change_type"] == "order_sync"
    ]
    assert [(h["marketplace_id"], h["order_id"], h["order_item_id"]) for h in order_sync] == [
        (REFURBED, int(order["id"]), item_id)
    ]
    assert await line_rows(service.engine) == [(REFURBED, item_id, None)]

    refurbed.state.reset_stats()
    again = await poll(service)

    assert again is not None and again.error is None
    assert again.listings_refreshed == 0
    assert BATCH_GET not in refurbed.state.stats()["by_method"]
    assert (
        len(
            [
                h
                for h in await history_rows(service.engine, variation)
                if h["change_type"] == "order_sync"
            ]
        )
        == 1
    )


async def test_a_back_market_line_with_the_same_id_does_not_hide_a_refurbed_sale(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    order = place_order(refurbed, 1)
    item = order["items"][0]
    # Marketplace 1 saw a line numbered like Refurbed's item, in the same state code.
    await record_line(service.engine, marketplace_id=1, line_id=int(item["id"]), state=1)

    outcome = await poll(service)

    assert outcome is not None and outcome.listings_refreshed == 1
    assert (await stock_row(service.engine, variation, REFURBED))["listed_stock"] == START_STOCK - 1
    assert await line_rows(service.engine) == [
        (1, int(item["id"]), None),
        (REFURBED, int(item["id"]), None),
    ]


async def test_a_refurbed_poll_gives_back_only_its_own_unsettled_claims(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    """Marketplace 1's watcher is subtracting line 5 right now; marketplace 4's own claim on
    line 6 was left unsettled by a subtraction that failed."""
    await record_line(
        service.engine, marketplace_id=1, line_id=5, state=1, claimed_by=WATCHER_CLAIM
    )
    await record_line(
        service.engine, marketplace_id=REFURBED, line_id=6, state=1, claimed_by=WATCHER_CLAIM
    )

    outcome = await poll(service)

    assert outcome is not None and outcome.error is None
    assert await line_rows(service.engine) == [(1, 5, WATCHER_CLAIM), (REFURBED, 6, None)]


async def test_twenty_concurrent_additions_on_one_refurbed_offer_all_land(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    path = f"/variations/{variation}/add-quantity"

    answers = await asyncio.gather(
        *(
            service.http.post(path, params={"marketplace_id": REFURBED}, json={"quantity": 1})
            for _ in range(20)
        )
    )

    assert [answer.status_code for answer in answers] == [200] * 20, [
        answer.text for answer in answers if answer.status_code != 200
    ]
    assert refurbed.state.stock_of(SKU) == START_STOCK + 20
    assert (await stock_row(service.engine, variation, REFURBED))[
        "listed_stock"
    ] == START_STOCK + 20
    additions = [
        h
        for h in await history_rows(service.engine, variation)
        if h["change_type"] == "add_quantity"
    ]
    assert len(additions) == 20
    assert {h["marketplace_id"] for h in additions} == {REFURBED}
    assert sorted(h["listed_stock_after"] for h in additions) == list(
        range(START_STOCK + 1, START_STOCK + 21)
    )


async def record_line(
    engine: AsyncEngine,
    *,
    marketplace_id: int,
    line_id: int,
    state: int,
    claimed_by: str | None = None,
) -> None:
    event = sales.LineEvent(
        line=mp.OrderLine(
            id=line_id,
            order_id=line_id * 10,
            listing_id=None,
            sku="ELSEWHERE",
            quantity=1,
            state=state,
            created_at=datetime(2026, 12, 1),
        ),
        order_modified_at=None,
        variation_id=None,
    )
    async with engine.begin() as conn:
        if claimed_by is None:
            await sales.record_lines(
                conn, [event], marketplace_id=marketplace_id, seen_at=datetime(2026, 12, 1)
            )
        else:
            await sales.claim_for_compensation(
                conn,
                [event],
                marketplace_id=marketplace_id,
                by=claimed_by,
                at=datetime(2026, 12, 1),
            )


async def test_a_refurbed_sale_is_credited_by_the_stored_offer_id_even_when_its_sku_is_ambiguous(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    # Another variation took the same SKU since the offer was found (a lower id: by SKU alone,
    # the first of the two would be credited).
    await insert_variation(
        service.engine, variation_id=VARIATION - 1, reference_id=None, reference_uuid=None, sku=SKU
    )
    place_order(refurbed, 1)

    outcome = await poll(service)

    assert outcome is not None and outcome.error is None
    assert (await stock_row(service.engine, variation, REFURBED))["listed_stock"] == START_STOCK - 1
    assert [h["change_type"] for h in await history_rows(service.engine, VARIATION - 1)] == []


async def test_a_refurbed_sale_of_an_ambiguous_sku_never_found_credits_no_variation(
    service: Any, refurbed: RunningRefurbedSimulator
) -> None:
    other_sku = "SKU-0000005"
    for variation_id in (410, 411):
        await insert_variation(
            service.engine,
            variation_id=variation_id,
            reference_id=None,
            reference_uuid=None,
            sku=other_sku,
        )
    place_order(refurbed, 1, sku=other_sku)

    outcome = await poll(service)

    assert outcome is not None and outcome.error is None
    assert outcome.new_lines == 1
    assert outcome.listings_refreshed == 0
    for variation_id in (410, 411):
        assert await history_rows(service.engine, variation_id) == []
