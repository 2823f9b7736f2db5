"""A server SIGKILLed in the middle of an add-quantity: the caller's retry with the same
Idempotency-Key, answered by the restarted server, applies the addition exactly once.

The simulator parks one request of the addition so that the kill lands at a known step:
- during the read (nothing sent yet),
- with the update sent and never answered nor applied (a "timeout" fault),
- after Back Market applied the update and answered, while the service reads the orders
  created meanwhile, before it recorded anything as applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes.support import (
    Server,
    Simulator,
    assert_stock_invariants,
    rows,
    wait_for,
)

pytestmark = pytest.mark.processes

START = 5
ADDED = 3
KEY = "restock-after-crash-1"

# Back Market's quantity at the moment of the kill.
QUANTITY_AT_KILL = {
    "during_the_read": START,
    "update_sent_not_applied": START,
    "update_applied_not_recorded": START + ADDED,
}


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    simulator = Simulator(tmp_path_factory.mktemp("sim"), listings=10).start()
    yield simulator
    simulator.stop()


@pytest.mark.parametrize("kill_point", list(QUANTITY_AT_KILL))
async def test_an_add_quantity_killed_mid_way_is_applied_once_by_its_keyed_retry(
    kill_point: str,
    proc_db_url: str,
    proc_engine: AsyncEngine,
    simulator: Simulator,
    tmp_path: Path,
) -> None:
    listing = await simulator.control("POST", "/listings", json={"quantity": START})
    await _link(proc_engine, listing)
    server = Server(tmp_path, proc_db_url, simulator.base_url).start()
    try:
        parked = await _park(simulator, kill_point, listing_uuid=listing["id"])
        async with server.client() as http:
            first = asyncio.create_task(_add(http))
            await parked.wait()
            assert await simulator.quantity(listing["id"]) == QUANTITY_AT_KILL[kill_point]
            server.kill()
            with pytest.raises(httpx.TransportError):
                await first
        await parked.let_go()

        server.start()
        async with server.client() as http:
            retried = await _add(http)
            repeated = await _add(http)
    finally:
        server.stop()

    assert retried.status_code == 200, retried.text
    assert retried.json()["quantity"] == START + ADDED
    assert retried.json()["previous_quantity"] == START
    assert repeated.status_code == 200, repeated.text
    assert repeated.json() == {**retried.json(), "idempotent_replay": True}
    assert await simulator.quantity(listing["id"]) == START + ADDED
    assert len(await simulator.updates_of(listing["id"])) == 1
    [stock] = await rows(proc_engine, "SELECT * FROM marketplace_stock WHERE variation_id = 1")
    assert stock["listed_stock"] == START + ADDED
    history = await rows(
        proc_engine,
        "SELECT * FROM marketplace_stock_history WHERE variation_id = 1 "
        "AND change_type = 'add_quantity'",
    )
    assert len(history) == 1
    await assert_stock_invariants(proc_engine)


@dataclass
class Parked:
    """One request of the addition, parked in the simulator until the kill."""

    simulator: Simulator
    hold_id: int | None
    # Timeout faults the (module's) simulator had answered before this one was queued.
    timeouts_before: int = 0

    async def wait(self) -> None:
        if self.hold_id is not None:
            await self.simulator.wait_held(self.hold_id)
            return
        await wait_for(self._update_timing_out, what="the update parked")

    async def _update_timing_out(self) -> bool:
        stats = await self.simulator.control("GET", "/stats")
        return bool(stats["faults"].get("timeout", 0) == self.timeouts_before + 1)

    async def let_go(self) -> None:
        """A held request goes on to a closed socket; the timed-out update never reaches the
        listing (it answers 524 to nobody, without applying anything)."""
        if self.hold_id is not None:
            await self.simulator.release(self.hold_id)


async def _park(simulator: Simulator, kill_point: str, *, listing_uuid: str) -> Parked:
    if kill_point == "during_the_read":
        hold = await simulator.hold(f"/ws/listings/{listing_uuid}", method="GET")
        return Parked(simulator, hold)
    if kill_point == "update_applied_not_recorded":
        # After its update, an addition reads the orders created meanwhile; Back Market has
        # applied and answered the update by then, and the service has recorded nothing yet.
        hold = await simulator.hold("/ws/orders", method="GET")
        return Parked(simulator, hold)
    # The update is sent and stays unanswered, never applied: a "timeout" fault (once).
    await simulator.control("PATCH", "/config", json={"timeout_fault_s": 120})
    timeouts_before = (await simulator.control("GET", "/stats"))["faults"].get("timeout", 0)
    body = {"path_prefix": f"/ws/listings/{listing_uuid}", "method": "POST", "kind": "timeout"}
    await simulator.control("POST", "/faults", json=body)
    return Parked(simulator, None, timeouts_before)


async def _add(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(
        "/variations/1/add-quantity", json={"quantity": ADDED}, headers={"Idempotency-Key": KEY}
    )


async def _link(engine: AsyncEngine, listing: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO variation (id, reference_id, reference_uuid, listed_stock) "
                "VALUES (1, :listing_id, :uuid, 0)"
            ),
            {"listing_id": str(listing["listing_id"]), "uuid": listing["id"]},
        )
