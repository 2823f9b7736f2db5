"""A sale made while add-quantity's update is in flight is not undone (SQLite and MariaDB).

The race is staged by holding the addition's update (POST) inside the simulator: its read has
been answered, a customer buys, then the update arrives and overwrites the sale.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services import backmarket as bm
from app.services import marketplace as mp
from app.services import sales
from app.services.orders import poll as poll_module
from app.services.quantity import add_quantity
from app.services.quantity.send import UpdateSender
from app.services.quantity.sold_during import ListingIdentity
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    add_linked_listing,
    key_rows,
    requests_sent,
    stock_row,
    update_calls,
)

pytestmark = pytest.mark.watcher_off("counts every request to the simulator")

ORDER_TABLES = ("backmarket_order_lines", "backmarket_stock_additions", "backmarket_order_watch")


async def empty_order_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in ORDER_TABLES:
            await conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture(autouse=True)
async def no_order_rows(engine: AsyncEngine) -> AsyncIterator[None]:
    # The simulator numbers order lines from the same id in every test: rows left by another
    # test would read as lines already compensated.
    await empty_order_tables(engine)
    yield
    await empty_order_tables(engine)


def add_path(variation_id: int) -> str:
    return f"/variations/{variation_id}/add-quantity"


async def add_while_selling(
    service: Any,
    listing: LinkedListing,
    quantity: int,
    *,
    sell: Callable[[], Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Add `quantity`; `sell` runs after the addition's read was answered, before its update
    reaches Back Market."""
    hold = service.simulator.hold(f"/ws/listings/{listing.id}", method="POST")
    request = asyncio.create_task(
        service.http.post(
            add_path(listing.variation_id), json={"quantity": quantity}, headers=headers or {}
        )
    )
    await service.simulator.wait_held(hold)
    sell()
    service.simulator.release(hold)
    return await request


async def listed_stock(service: Any, listing: LinkedListing) -> int:
    return int((await stock_row(service.engine, listing.variation_id))["listed_stock"])


async def addition_windows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(sa.text("SELECT COUNT(*) FROM backmarket_stock_additions"))
            ).scalar_one()
        )


async def test_a_sale_between_read_and_update_is_subtracted_again(
    service: Any, listing: LinkedListing
) -> None:
    response = await add_while_selling(
        service, listing, 3, sell=lambda: service.simulator.place_order(listing.id, units=2)
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["previous_quantity"], body["added"], body["quantity"]) == (5, 3, 6)
    assert body["sales_during_update"] == 2
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 2 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 2 + 3
    assert [call["body"] for call in update_calls(service.simulator)] == [
        {"quantity": 8},
        {"quantity": 6},
    ]


async def test_a_replay_of_the_key_answers_the_same_and_calls_back_market_no_more(
    service: Any, listing: LinkedListing
) -> None:
    headers = {"Idempotency-Key": "sale-during-1"}
    first = await add_while_selling(
        service,
        listing,
        3,
        sell=lambda: service.simulator.place_order(listing.id),
        headers=headers,
    )
    calls = requests_sent(service.simulator)

    replay = await service.http.post(
        add_path(listing.variation_id), json={"quantity": 3}, headers=headers
    )

    assert first.status_code == replay.status_code == 200
    assert first.json()["sales_during_update"] == 1
    assert replay.json() == {**first.json(), "idempotent_replay": True}
    assert requests_sent(service.simulator) == calls
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_hidden_sale_is_subtracted_once_by_the_watcher_when_back_market_shows_it(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wide margin puts the sale inside the watcher's own subtraction's window too, so that
    # subtraction surely sees the line again and must leave it alone.
    monkeypatch.setattr(sales, "SALE_WINDOW_MARGIN", timedelta(seconds=60))
    placed: list[Any] = []
    response = await add_while_selling(
        service,
        listing,
        3,
        sell=lambda: placed.append(service.simulator.place_order(listing.id, hidden=True)),
    )
    assert response.status_code == 200
    assert response.json()["sales_during_update"] == 0
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3
    service.simulator.pay_order(placed[0].order_id)
    watcher = service.app.state.container.watcher

    first = await watcher.poll()
    updates = len(update_calls(service.simulator))
    second = await watcher.poll()

    assert first.compensated_lines == 1
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3
    assert second.compensated_lines == 0
    assert len(update_calls(service.simulator)) == updates
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3


async def test_a_watcher_subtraction_that_fails_gives_its_claims_back_for_the_next_poll(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sales, "SALE_WINDOW_MARGIN", timedelta(seconds=60))
    placed: list[Any] = []
    response = await add_while_selling(
        service,
        listing,
        3,
        sell=lambda: placed.append(service.simulator.place_order(listing.id, hidden=True)),
    )
    assert response.status_code == 200
    service.simulator.pay_order(placed[0].order_id)
    watcher = service.app.state.container.watcher

    async def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("database connection lost")

    monkeypatch.setattr(poll_module, "add_quantity", database_gone)
    failed = await watcher.poll()
    monkeypatch.setattr(poll_module, "add_quantity", add_quantity)
    retried = await watcher.poll()

    assert failed.compensated_lines == 0
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert retried.compensated_lines == 1
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


def operational_error(what: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError(what, {}, Exception("database connection lost"))


async def test_a_watcher_subtraction_that_fails_with_the_database_is_retried_by_the_next_poll(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away in the middle of the subtraction and stays away for the rest of
    the poll: nothing can be given back then, and the sale is still subtracted next poll."""
    monkeypatch.setattr(sales, "SALE_WINDOW_MARGIN", timedelta(seconds=60))
    placed: list[Any] = []
    response = await add_while_selling(
        service,
        listing,
        3,
        sell=lambda: placed.append(service.simulator.place_order(listing.id, hidden=True)),
    )
    assert response.status_code == 200
    service.simulator.pay_order(placed[0].order_id)
    watcher = service.app.state.container.watcher
    transaction = poll_module.transaction

    @asynccontextmanager
    async def no_database(engine: Any) -> AsyncIterator[Any]:
        raise operational_error("BEGIN")
        yield

    async def database_gone(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(poll_module, "transaction", no_database)
        raise operational_error("UPDATE backmarket_stock_budget")

    monkeypatch.setattr(poll_module, "add_quantity", database_gone)
    with contextlib.suppress(sa.exc.OperationalError):
        await watcher.poll()
    monkeypatch.setattr(poll_module, "transaction", transaction)
    monkeypatch.setattr(poll_module, "add_quantity", add_quantity)
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3
    retried = await watcher.poll()

    assert retried.compensated_lines == 1
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_watcher_subtraction_cancelled_midway_is_retried_by_the_next_poll(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sales, "SALE_WINDOW_MARGIN", timedelta(seconds=60))
    placed: list[Any] = []
    response = await add_while_selling(
        service,
        listing,
        3,
        sell=lambda: placed.append(service.simulator.place_order(listing.id, hidden=True)),
    )
    assert response.status_code == 200
    service.simulator.pay_order(placed[0].order_id)
    watcher = service.app.state.container.watcher

    async def shut_down(*args: Any, **kwargs: Any) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr(poll_module, "add_quantity", shut_down)
    with pytest.raises(asyncio.CancelledError):
        await watcher.poll()
    monkeypatch.setattr(poll_module, "add_quantity", add_quantity)
    retried = await watcher.poll()

    assert retried.compensated_lines == 1
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_subtraction_by_add_quantity_that_fails_with_the_database_is_left_to_the_watcher(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key nobody retries the request's own subtraction: its claims go back."""
    reserve = UpdateSender.reserve
    reservations = 0

    async def second_reservation_fails(sender: UpdateSender) -> Any:
        nonlocal reservations
        reservations += 1
        if reservations == 2:
            raise operational_error("UPDATE backmarket_stock_budget")
        return await reserve(sender)

    monkeypatch.setattr(UpdateSender, "reserve", second_reservation_fails)
    # The test client raises what the server answers with a 500.
    with pytest.raises(sa.exc.OperationalError):
        await add_while_selling(
            service, listing, 3, sell=lambda: service.simulator.place_order(listing.id)
        )
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3
    monkeypatch.setattr(UpdateSender, "reserve", reserve)

    polled = await service.app.state.container.watcher.poll()

    assert polled.compensated_lines == 1
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_sale_before_the_read_is_not_subtracted(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.wall_clock = lambda: datetime.now(UTC) - timedelta(seconds=10)
    service.simulator.place_order(listing.id)
    service.simulator.wall_clock = lambda: datetime.now(UTC)

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 3})

    assert response.status_code == 200
    body = response.json()
    assert (body["previous_quantity"], body["quantity"], body["sales_during_update"]) == (4, 7, 0)
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert len(update_calls(service.simulator)) == 1


async def test_a_sale_of_another_listing_during_the_update_is_not_subtracted(
    service: Any, listing: LinkedListing
) -> None:
    other = await add_linked_listing(service, variation_id=202)

    response = await add_while_selling(
        service, listing, 3, sell=lambda: service.simulator.place_order(other.id)
    )

    assert response.status_code == 200
    assert response.json()["sales_during_update"] == 0
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3
    assert service.simulator.quantity_of(other.id) == START_QUANTITY - 1
    assert len(update_calls(service.simulator)) == 1


async def test_a_failing_orders_read_leaves_the_sale_to_the_watcher(
    service: Any, listing: LinkedListing
) -> None:
    def sell_and_break_the_feed() -> None:
        service.simulator.place_order(listing.id)
        service.simulator.fail_next("/ws/orders", count=2, kind="503")

    response = await add_while_selling(service, listing, 3, sell=sell_and_break_the_feed)

    assert response.status_code == 200
    assert response.json()["sales_during_update"] == 0
    assert response.json()["quantity"] == START_QUANTITY + 3
    assert await addition_windows(service.engine) == 1
    await service.app.state.container.watcher.poll()
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_refused_subtraction_answers_the_addition_and_leaves_the_sale_to_the_watcher(
    service: Any, listing: LinkedListing
) -> None:
    headers = {"Idempotency-Key": "sale-during-refused"}

    def sell_and_refuse_the_next_update() -> None:
        service.simulator.place_order(listing.id)
        service.simulator.fail_next(
            f"/ws/listings/{listing.id}", count=2, kind="429", method="POST"
        )

    response = await add_while_selling(
        service, listing, 3, sell=sell_and_refuse_the_next_update, headers=headers
    )
    # The addition is applied: its key is settled, never freed for a second addition.
    replay = await service.http.post(
        add_path(listing.variation_id), json={"quantity": 3}, headers=headers
    )
    await service.app.state.container.watcher.poll()

    assert response.status_code == 200
    assert (response.json()["quantity"], response.json()["sales_during_update"]) == (8, 0)
    assert replay.json() == {**response.json(), "idempotent_replay": True}
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_subtraction_without_answer_is_confirmed_by_a_retry_with_the_key(
    service: Any, listing: LinkedListing
) -> None:
    headers = {"Idempotency-Key": "sale-during-lost"}

    def sell_and_lose_the_next_answer() -> None:
        service.simulator.place_order(listing.id)
        service.simulator.fail_next(
            f"/ws/listings/{listing.id}", kind="lost_response", method="POST"
        )

    lost = await add_while_selling(
        service, listing, 3, sell=sell_and_lose_the_next_answer, headers=headers
    )
    retried = await service.http.post(
        add_path(listing.variation_id), json={"quantity": 3}, headers=headers
    )

    assert lost.status_code == 504
    assert lost.json()["addition_applied"] is True
    assert retried.status_code == 200
    body = retried.json()
    assert (body["previous_quantity"], body["added"], body["quantity"]) == (5, 3, 7)
    assert body["sales_during_update"] == 1
    assert len(update_calls(service.simulator)) == 2
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
    assert await listed_stock(service, listing) == START_QUANTITY - 1 + 3


async def test_a_retry_with_the_key_resends_a_subtraction_that_was_not_applied(
    service: Any, listing: LinkedListing
) -> None:
    headers = {"Idempotency-Key": "sale-during-500"}

    def sell_and_fail_the_next_update() -> None:
        service.simulator.place_order(listing.id)
        service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="500", method="POST")

    failed = await add_while_selling(
        service, listing, 3, sell=sell_and_fail_the_next_update, headers=headers
    )
    [key] = await key_rows(service.engine)
    retried = await service.http.post(
        add_path(listing.variation_id), json={"quantity": 3}, headers=headers
    )

    assert failed.status_code == 504
    assert (key["status"], key["previous_quantity"], key["target_quantity"]) == ("unknown", 8, 7)
    assert retried.status_code == 200
    assert retried.json()["sales_during_update"] == 1
    assert retried.json()["idempotent_replay"] is False
    assert [call["body"]["quantity"] for call in update_calls(service.simulator)] == [8, 7]
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3


async def test_a_removal_floored_at_zero_removes_what_there_is(
    service: Any, listing: LinkedListing
) -> None:
    result = await add_quantity(
        service.app.state.container.ctx,
        marketplace_id=1,
        variation_id=listing.variation_id,
        quantity=-(START_QUANTITY + 4),
        floor_at_zero=True,
    )

    assert (result.previous_quantity, result.added, result.quantity) == (5, -5, 0)
    assert service.simulator.quantity_of(listing.id) == 0
    assert await listed_stock(service, listing) == 0


def line(
    *, listing_id: int | None, sku: str | None, listing_ref: str | None = None
) -> bm.OrderLine:
    return bm.OrderLine(
        id=1,
        order_id=1,
        listing_id=listing_id,
        sku=sku,
        quantity=1,
        state=1,
        created_at=None,
        listing_ref=listing_ref,
    )


def test_an_order_line_names_its_listing_by_id_else_by_sku() -> None:
    identity = ListingIdentity(
        listing_id=100140, reference="uuid-100140", skus=frozenset({"TEST-101"})
    )

    assert identity.owns(line(listing_id=100140, sku="OTHER"))
    assert not identity.owns(line(listing_id=100147, sku="TEST-101"))
    assert identity.owns(line(listing_id=None, sku="TEST-101"))
    assert not identity.owns(line(listing_id=None, sku="OTHER"))


def test_a_refurbed_order_item_names_its_offer_by_the_offer_id_else_by_sku() -> None:
    """Refurbed has no integer listing id: an item's `offer_data.offer_id` is the offer's id."""
    offer = mp.Listing(id="8001", sku="SKU-1", quantity=3)
    identity = ListingIdentity.of(offer, variation_sku="SKU-1", reference_id=None)

    assert identity.owns(line(listing_id=None, sku=None, listing_ref="8001"))
    assert not identity.owns(line(listing_id=None, sku="SKU-1", listing_ref="8002"))
    assert identity.owns(line(listing_id=None, sku="SKU-1"))
    assert not identity.owns(line(listing_id=None, sku="SKU-2"))


async def test_an_addition_without_answer_leaves_the_sale_made_during_it_to_the_watcher(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = service.app.state.container.ctx.marketplaces.get(1).client
    update_listing = client.update_listing

    async def sold_then_applied_and_answer_lost(ref: str, **kwargs: Any) -> bm.Listing:
        service.simulator.place_order(listing.id)
        await update_listing(ref, **kwargs)
        raise bm.OutcomeUnknown("the answer was lost", endpoint=bm.ENDPOINT_UPDATE_LISTING)

    monkeypatch.setattr(client, "update_listing", sold_then_applied_and_answer_lost)
    lost = await service.http.post(add_path(listing.variation_id), json={"quantity": 3})
    monkeypatch.undo()

    await service.app.state.container.watcher.poll()

    assert lost.status_code == 504
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1 + 3
