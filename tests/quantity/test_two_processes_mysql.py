"""Two server processes on one MariaDB database: additions to one variation never get lost, and
sets expecting one quantity apply once.

Runs only on MariaDB/MySQL (TEST_MYSQL_URL): with SQLite the service is one process by design.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import is_mysql
from simulator.config import SimulatorConfig
from simulator.testing import RunningSimulator
from tests.quantity.support import (
    INTERLEAVING_LATENCY_MS,
    START_QUANTITY,
    history_rows,
    insert_variation,
    stock_row,
    variation_row,
)

REPOSITORY = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30
ADDITIONS = 50


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(*, database_url: str, backmarket_url: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("API_KEYS", "CORS_ORIGINS") and not key.startswith("BACKMARKET_")
    }
    environment.update(
        DATABASE_URL=database_url,
        RUN_MIGRATIONS_ON_STARTUP="false",
        SYNC_INTERVAL_MINUTES="0",
        BACKMARKET_BASE_URL=backmarket_url,
        BACKMARKET_TOKEN="sim-token",
        BACKMARKET_USER_AGENT="BM-Tests-StockSync;tests@example.com",
        BACKMARKET_REQUESTS_PER_10S="10000",
    )
    return environment


@pytest.fixture
def mysql_engine(engine: AsyncEngine) -> AsyncEngine:
    if not is_mysql(engine):
        pytest.skip("two server processes need a shared MariaDB/MySQL database")
    return engine


@pytest.fixture
async def backmarket() -> AsyncIterator[RunningSimulator]:
    async with RunningSimulator(
        SimulatorConfig(listings=20, seed=7, latency_ms=INTERLEAVING_LATENCY_MS)
    ) as simulator:
        yield simulator


@pytest.fixture
def two_servers(
    db_url: str, mysql_engine: AsyncEngine, backmarket: RunningSimulator, tmp_path: Path
) -> Iterator[list[str]]:
    """Two `uvicorn app.main:app` processes sharing the test database and the simulator."""
    environment = server_environment(database_url=db_url, backmarket_url=backmarket.base_url)
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for number in range(2):
            port = free_port()
            log = (tmp_path / f"server-{number}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "app.main:app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    cwd=REPOSITORY,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for process, url, number in zip(processes, urls, range(2), strict=True):
            wait_until_ready(process, url, tmp_path / f"server-{number}.log")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server {url} exited at start-up:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"server {url} was not up after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


async def test_fifty_additions_spread_over_two_server_processes_all_land(
    mysql_engine: AsyncEngine, backmarket: RunningSimulator, two_servers: list[str]
) -> None:
    identity = backmarket.state.add_listing(quantity=START_QUANTITY, sku="TWO-PROC")
    await insert_variation(
        mysql_engine,
        variation_id=301,
        reference_id=str(identity["listing_id"]),
        reference_uuid=identity["id"],
    )

    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(f"{two_servers[n % 2]}/variations/301/add-quantity", json={"quantity": 1})
                for n in range(ADDITIONS)
            )
        )

    assert [r.status_code for r in responses] == [200] * ADDITIONS, [
        r.text for r in responses if r.status_code != 200
    ]
    assert backmarket.state.quantity_of(identity["id"]) == START_QUANTITY + ADDITIONS
    assert len(backmarket.state.stats()["updates"]) == ADDITIONS
    assert sorted(r.json()["previous_quantity"] for r in responses) == list(
        range(START_QUANTITY, START_QUANTITY + ADDITIONS)
    )
    assert (await stock_row(mysql_engine, 301))["listed_stock"] == START_QUANTITY + ADDITIONS
    assert (await variation_row(mysql_engine, 301))["listed_stock"] == START_QUANTITY + ADDITIONS
    assert len(await history_rows(mysql_engine, 301)) == ADDITIONS


SETS = 20


async def test_twenty_sets_expecting_one_quantity_over_two_server_processes_apply_once(
    mysql_engine: AsyncEngine, backmarket: RunningSimulator, two_servers: list[str]
) -> None:
    identity = backmarket.state.add_listing(quantity=START_QUANTITY, sku="TWO-PROC-SET")
    await insert_variation(
        mysql_engine,
        variation_id=302,
        reference_id=str(identity["listing_id"]),
        reference_uuid=identity["id"],
    )

    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.put(
                    f"{two_servers[n % 2]}/variations/302/quantity",
                    json={"quantity": 10 + n, "expected_quantity": START_QUANTITY},
                )
                for n in range(SETS)
            )
        )

    assert sorted(r.status_code for r in responses) == [200] + [409] * (SETS - 1), [
        r.text for r in responses if r.status_code not in (200, 409)
    ]
    [applied] = [r.json()["quantity"] for r in responses if r.status_code == 200]
    assert {r.json()["live_quantity"] for r in responses if r.status_code == 409} == {applied}
    assert backmarket.state.quantity_of(identity["id"]) == applied
    assert len(backmarket.state.stats()["updates"]) == 1
    assert (await stock_row(mysql_engine, 302))["listed_stock"] == applied
    assert len(await history_rows(mysql_engine, 302)) == 1
