"""One run per marketplace across processes: a real second server on the same MariaDB/MySQL.

A uvicorn subprocess runs a bulk sync against a simulator on a real port, held on its first
page; this process's service (and the CLI entry point) then find the run going and answer 409
with its id. SQLite's lock is per process by design, so these tests need TEST_MYSQL_URL.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import sync_once
from app.errors import Conflict
from app.models import RunTrigger
from app.services.sync import SyncOptions
from simulator.config import SimulatorConfig
from simulator.testing import RunningSimulator

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def mysql_url(db_url: str) -> str:
    if not db_url.startswith("mysql"):
        pytest.skip("one run across processes is a database lock on MySQL/MariaDB only")
    return db_url


@pytest.fixture
def real_simulator() -> Iterator[RunningSimulator]:
    with RunningSimulator(SimulatorConfig(listings=120, seed=7, markets=("fr-fr",))) as running:
        yield running


def start_server(listener: socket.socket, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:app_factory"]
    command += ["--fd", str(listener.fileno()), "--log-level", "warning"]
    return subprocess.Popen(command, cwd=REPOSITORY, env=env, pass_fds=(listener.fileno(),))


@pytest.fixture
async def other_server(
    mysql_url: str, engine: Any, real_simulator: RunningSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    """`uvicorn app.main:app_factory` in a process of its own, on the test's database."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": mysql_url,
        "BACKMARKET_BASE_URL": real_simulator.base_url,
        "BACKMARKET_TOKEN": "sim-token",
        "BACKMARKET_USER_AGENT": "BM-Tests-StockSync;tests@example.com",
        "BACKMARKET_REQUESTS_PER_10S": "10000",
        "SYNC_INTERVAL_MINUTES": "0",
        "RUN_MIGRATIONS_ON_STARTUP": "false",
    }
    env.pop("API_KEYS", None)
    process = start_server(listener, env)
    listener.close()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(1500):
                if process.poll() is not None:
                    raise AssertionError(f"the second server exited with {process.returncode}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the second server did not start")
            yield http
    finally:
        real_simulator.state.release_all()
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 5)


async def test_a_run_in_another_server_process_makes_this_one_answer_409_with_its_id(
    other_server: httpx.AsyncClient, real_simulator: RunningSimulator, service: Any
) -> None:
    hold = real_simulator.state.hold("/ws/listings", page=1)
    started = await other_server.post("/sync/bulk")
    assert started.status_code == 202
    run_id = started.json()["run"]["id"]
    await real_simulator.state.wait_held(hold)

    here = await service.http.post("/sync/bulk", params={"wait": "true"})
    with pytest.raises(Conflict) as from_cli:
        await sync_once(service.settings, SyncOptions(trigger=RunTrigger.CLI))
    live = (await service.http.get(f"/sync/runs/{run_id}")).json()["run"]

    assert here.status_code == 409
    assert here.json()["run_id"] == run_id
    assert from_cli.value.extra["run_id"] == run_id
    assert live["status"] == "running"

    real_simulator.state.release(hold)
    for _ in range(2000):
        run = (await service.http.get(f"/sync/runs/{run_id}")).json()["run"]
        if run["status"] != "running":
            break
        await asyncio.sleep(0.005)
    assert run["status"] == "completed"
    assert (await service.http.post("/sync/bulk", params={"wait": "true"})).status_code == 200
