"""/_sim/ HTTP control endpoints, the out-of-process twin of SimulatorState."""

from __future__ import annotations

import asyncio

import httpx

from simulator import SimulatorState


async def test_quantity_can_be_set_and_read(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    written = await client.put("/_sim/listings/SKU-0000001/quantity", json={"quantity": 9})
    read = await client.get("/_sim/listings/100000/quantity")

    assert written.status_code == 200
    assert read.json() == {**written.json(), "quantity": 9}
    assert state.quantity_of("SKU-0000001") == 9


async def test_unknown_listing_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/_sim/listings/SKU-9999999/quantity")

    assert response.status_code == 404
    assert "detail" in response.json()


async def test_order_decrements_stock_and_is_recorded(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    state.set_quantity(100000, 3)

    response = await client.post("/_sim/listings/100000/orders", json={"units": 2})
    too_many = await client.post("/_sim/listings/100000/orders", json={"units": 2})

    assert response.json()["quantity"] == 1
    assert too_many.status_code == 409
    assert [order["quantity"] for order in state.stats()["orders"]] == [1]


async def test_listing_can_be_added_and_removed(client: httpx.AsyncClient) -> None:
    added = await client.post("/_sim/listings", json={"sku": "NEW-1", "quantity": 2})
    duplicate = await client.post("/_sim/listings", json={"sku": "NEW-1"})
    removed = await client.delete(f"/_sim/listings/{added.json()['id']}")
    gone = await client.get("/ws/listings/detail", params={"sku": "NEW-1"})

    assert added.status_code == 201
    assert duplicate.status_code == 409
    assert removed.status_code == 204
    assert gone.status_code == 404


async def test_fault_can_be_queued_and_cleared(client: httpx.AsyncClient) -> None:
    await client.post(
        "/_sim/faults", json={"path_prefix": "/ws/listings", "kind": "503", "count": 2}
    )
    failed = await client.get("/ws/listings")
    await client.delete("/_sim/faults")
    recovered = await client.get("/ws/listings")

    assert failed.status_code == 503
    assert recovered.status_code == 200


async def test_hold_can_be_placed_watched_and_released(client: httpx.AsyncClient) -> None:
    hold = (
        await client.post("/_sim/holds", json={"path_prefix": "/ws/listings", "page": 1})
    ).json()
    parked = asyncio.create_task(client.get("/ws/listings"))
    for _ in range(1000):
        if (await client.get(f"/_sim/holds/{hold['hold_id']}")).json()["held"] == 1:
            break
        await asyncio.sleep(0.002)

    released = await client.post(f"/_sim/holds/{hold['hold_id']}/release")

    assert released.json()["released"] is True
    assert (await parked).status_code == 200


async def test_stats_are_read_and_reset_without_counting_control_calls(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/ws/listings")
    await client.get("/ws/listings/100000")
    stats = (await client.get("/_sim/stats")).json()
    await client.post("/_sim/stats/reset")
    after_reset = (await client.get("/_sim/stats")).json()

    assert stats["total_requests"] == 2
    assert stats["by_endpoint"] == {
        "GET /ws/listings 200": 1,
        "GET /ws/listings/{listingId} 200": 1,
    }
    assert after_reset["total_requests"] == 0
    assert after_reset["by_endpoint"] == {}


async def test_config_changes_at_run_time(client: httpx.AsyncClient) -> None:
    changed = await client.patch(
        "/_sim/config", json={"max_page_size": 5, "update_status_code": 202}
    )
    page = (await client.get("/ws/listings", params={"page-size": 50})).json()
    refused = await client.patch("/_sim/config", json={"listings": 5})
    bad_value = await client.patch("/_sim/config", json={"update_status_code": 204})

    assert changed.json()["max_page_size"] == 5
    assert "token" not in changed.json()
    assert len(page["results"]) == 5
    assert refused.status_code == bad_value.status_code == 422
