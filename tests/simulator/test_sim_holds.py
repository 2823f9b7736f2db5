"""hold/release: park requests to stage races and measure concurrency."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from simulator import SimulatorState


async def test_held_request_waits_until_released(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    hold = state.hold("/ws/listings", page=2)
    held = asyncio.create_task(client.get("/ws/listings", params={"page": 2}))
    await state.wait_held(hold)

    free = await client.get("/ws/listings", params={"page": 1})

    assert free.status_code == 200
    assert not held.done()
    assert hold.held == 1
    state.release(hold)
    assert (await held).status_code == 200
    assert hold.held == 0
    assert hold.caught == 1


async def test_held_request_sees_changes_made_while_it_waited(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    hold = state.hold("/ws/listings/", method="GET")
    read = asyncio.create_task(client.get("/ws/listings/100000"))
    await state.wait_held(hold)

    state.set_quantity(100000, 41)
    state.release(hold)

    assert (await read).json()["quantity"] == 41


async def test_requests_after_release_are_not_held(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    hold = state.hold("/ws")
    state.release(hold)

    response = await asyncio.wait_for(client.get("/ws/listings"), timeout=2)

    assert response.status_code == 200
    assert hold.caught == 0


async def test_max_in_flight_counts_parked_requests(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    hold = state.hold("/ws/listings")
    pages = [asyncio.create_task(client.get("/ws/listings", params={"page": n})) for n in (1, 2, 3)]
    await state.wait_held(hold, count=3)

    in_flight = state.stats()["in_flight"]
    state.release(hold)
    await asyncio.gather(*pages)

    assert in_flight == 3
    assert state.stats()["max_in_flight"] == 3
    assert state.stats()["in_flight"] == 0


async def test_wait_held_times_out_when_nothing_arrives(state: SimulatorState) -> None:
    hold = state.hold("/ws")

    with pytest.raises(TimeoutError):
        await state.wait_held(hold, timeout_s=0.05)


async def test_order_placed_while_a_listing_read_is_held_shows_in_the_read_and_the_feed(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    # The race of add-quantity: read held, a customer buys, read released, update written.
    state.set_quantity(100000, 14)
    hold = state.hold("/ws/listings/100000", method="GET")
    read = asyncio.create_task(client.get("/ws/listings/100000"))
    await state.wait_held(hold)

    placed = state.place_order(100000)
    state.release(hold)
    seen = (await read).json()["quantity"]
    written = await client.post("/ws/listings/100000", json={"quantity": seen + 5})
    feed = (await client.get("/ws/orders")).json()["results"]

    assert seen == 13
    assert written.status_code == 200
    assert state.quantity_of(100000) == 18
    assert [order["order_id"] for order in feed] == [placed.order_id]
    assert [call["quantity"] for call in state.stats()["updates"]] == [18]


async def test_orders_poll_can_be_held(client: httpx.AsyncClient, state: SimulatorState) -> None:
    hold = state.hold("/ws/orders")
    poll = asyncio.create_task(client.get("/ws/orders"))
    await state.wait_held(hold)

    state.set_quantity(100000, 1)
    placed = state.place_order(100000)
    state.release(hold)

    assert [o["order_id"] for o in (await poll).json()["results"]] == [placed.order_id]
