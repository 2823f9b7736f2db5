"""PUT /variations/{id}/quantity?marketplace_id=4 where marketplace 4 is Refurbed (configured by
MARKETPLACE_4_*, its simulator on a socket), on SQLite and MariaDB: the set reaches Refurbed
through its adapter with the compare and the sales-during-the-update rule of Back Market's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.testing import RunningRefurbedSimulator
from tests.quantity.support import history_rows, insert_variation, stock_row
from tests.quantity.test_sales_during_update import empty_order_tables
from tests.quantity.test_set_quantity import put

pytestmark = pytest.mark.watcher_off("counts every request to the Back Market simulator")

REFURBED = 4
TOKEN = "refurbed-test-token"
SKU = "SKU-0000003"
VARIATION = 301
START_STOCK = 6


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


@pytest.fixture(autouse=True)
async def no_order_rows(engine: AsyncEngine) -> AsyncIterator[None]:
    await empty_order_tables(engine)
    yield
    await empty_order_tables(engine)


@pytest.fixture
async def variation(service: Any) -> int:
    # Marketplace 1's reference is Back Market's; marketplace 4 finds the offer by the SKU.
    await insert_variation(
        service.engine, variation_id=VARIATION, reference_id="999999", reference_uuid=None, sku=SKU
    )
    return VARIATION


def stock_updates(refurbed: RunningRefurbedSimulator) -> list[int | None]:
    return [update["stock"] for update in refurbed.state.stats()["updates"]]


async def test_a_set_on_refurbed_expecting_the_live_stock_is_sent_and_recorded_on_marketplace_4(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    response = await put(service, variation, 9, expected=START_STOCK, marketplace_id=REFURBED)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["marketplace_id"], body["previous_quantity"], body["quantity"]) == (
        REFURBED,
        START_STOCK,
        9,
    )
    assert stock_updates(refurbed) == [9]
    assert refurbed.state.stock_of(SKU) == 9
    assert (await stock_row(service.engine, variation, REFURBED))["listed_stock"] == 9
    history = await history_rows(service.engine, variation)
    assert [(h["marketplace_id"], h["change_type"]) for h in history] == [
        (REFURBED, "set_quantity")
    ]
    assert service.simulator.stats()["total_requests"] == 0


async def test_a_stale_expected_stock_on_refurbed_is_409_with_the_live_one_and_sends_nothing(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    refurbed.place_order([(SKU, 1)])

    response = await put(service, variation, 9, expected=START_STOCK, marketplace_id=REFURBED)

    assert response.status_code == 409
    assert (response.json()["reason"], response.json()["live_quantity"]) == (
        "quantity_changed",
        START_STOCK - 1,
    )
    assert stock_updates(refurbed) == []
    assert refurbed.state.stock_of(SKU) == START_STOCK - 1


async def test_a_refurbed_sale_between_the_services_read_and_its_update_is_subtracted_once(
    service: Any, refurbed: RunningRefurbedSimulator, variation: int
) -> None:
    hold = refurbed.state.hold("/refb.merchant.v1.OfferService/UpdateOffer")
    request = asyncio.create_task(
        put(service, variation, 9, expected=START_STOCK, marketplace_id=REFURBED)
    )
    await refurbed.state.wait_held(hold)
    refurbed.place_order([(SKU, 2)])
    refurbed.state.release(hold)
    response = await request
    await service.app.state.container.watchers[REFURBED].poll()

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["previous_quantity"], body["quantity"], body["sales_during_update"]) == (6, 7, 2)
    assert stock_updates(refurbed) == [9, 7]
    # The watcher saw the same sale afterwards and left it alone: subtracted once.
    assert refurbed.state.stock_of(SKU) == 7
    assert (await stock_row(service.engine, variation, REFURBED))["listed_stock"] == 7
