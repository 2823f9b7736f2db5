"""Real processes for the crash and several-process tests: the simulator and the service, each
started with `subprocess.Popen` on a port of its own, killed with signals, read back through the
database and the simulator's control API (`/_sim/...`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import utcnow

REPOSITORY = Path(__file__).resolve().parents[2]
# The console script of the environment running the tests (.venv locally, .venv-ci in CI).
STOCK_SYNC = str(Path(sys.executable).parent / "stock-sync")
STARTUP_TIMEOUT_S = 30.0
TOKEN = "sim-token"
USER_AGENT = "BM-Tests-StockSync;tests@example.com"
PAGE_SIZE = 50
# Seeded stock rows changed this long ago, so the newer-value guard never skips them.
LONG_AGO = timedelta(hours=1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Process:
    """A child started in a session of its own, so that it and its workers go together."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            cwd=REPOSITORY,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until_up(self, url: str) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited at start-up:\n{self.log()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not up after {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no finally block, no commit runs."""
        self._signal_group(signal.SIGKILL)
        self._reap(5)

    def stop(self) -> None:
        """SIGTERM (a graceful stop, workers included), SIGKILL if it lingers."""
        if self.popen is None or self.popen.poll() is not None:
            self._signal_group(signal.SIGKILL)
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        self._reap(5)

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group of this child only (its session id is its pid): uvicorn's workers too.
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self, timeout: float) -> None:
        if self.popen is not None:
            self.popen.wait(timeout=timeout)


class Simulator:
    """`stock-sync simulator` as a process of its own, driven through its control API."""

    def __init__(self, tmp: Path, *, listings: int, latency_ms: float = 0, seed: int = 7) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [STOCK_SYNC, "simulator", "--port", str(self.port), "--listings", str(listings)]
        command += ["--latency-ms", str(latency_ms), "--seed", str(seed), "--token", TOKEN]
        self.process = Process(
            "simulator", command, base_environment(), tmp / f"simulator-{self.port}.log"
        )

    def start(self) -> Simulator:
        self.process.start()
        self.process.wait_until_up(f"{self.base_url}/_sim/config")
        return self

    def stop(self) -> None:
        # Nothing to keep; a graceful stop would wait for parked and timing-out requests.
        self.process.kill()

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            response = await http.request(method, f"/_sim{path}", **kwargs)
        assert response.is_success, f"{method} /_sim{path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    async def hold(self, path_prefix: str, *, page: int | None = None, method: str) -> int:
        body = {"path_prefix": path_prefix, "page": page, "method": method}
        hold_id: int = (await self.control("POST", "/holds", json=body))["hold_id"]
        return hold_id

    async def wait_held(self, hold_id: int, count: int = 1, *, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while (held := await self.control("GET", f"/holds/{hold_id}"))["held"] < count:
            assert time.monotonic() < deadline, f"hold {hold_id} never caught {count}: {held}"
            await asyncio.sleep(0.02)

    async def release(self, hold_id: int) -> None:
        await self.control("POST", f"/holds/{hold_id}/release")

    async def quantity(self, ref: str) -> int:
        quantity: int = (await self.control("GET", f"/listings/{ref}/quantity"))["quantity"]
        return quantity

    async def updates_of(self, listing_uuid: str) -> list[dict[str, Any]]:
        stats = await self.control("GET", "/stats")
        return [update for update in stats["updates"] if update["id"] == listing_uuid]

    async def pages(self) -> list[list[dict[str, Any]]]:
        """The whole catalogue as the bulk sync reads it, page by page (call before any hold)."""
        headers = {"Authorization": f"Basic {TOKEN}", "User-Agent": USER_AGENT}
        pages: list[list[dict[str, Any]]] = []
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10) as http:
            number = 1
            while True:
                answer = await http.get(
                    "/ws/listings", params={"page": number, "page-size": PAGE_SIZE}
                )
                answer.raise_for_status()
                body = answer.json()
                pages.append(body["results"])
                if not body.get("next"):
                    return pages
                number += 1


def base_environment() -> dict[str, str]:
    """This environment without anything that would change the service's behaviour."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("API_KEYS", "CORS_ORIGINS", "DATABASE_URL")
        and not key.startswith(("BACKMARKET_", "SYNC_", "ORDER_SYNC_", "LOG_"))
    }


@dataclass
class Server:
    """The service: `stock-sync serve` (one process) or `uvicorn app.main:app --workers N`."""

    tmp: Path
    database_url: str
    backmarket_url: str
    workers: int = 1
    settings: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    starts: int = 0
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = base_environment()
        env.update(
            DATABASE_URL=self.database_url,
            RUN_MIGRATIONS_ON_STARTUP="false",
            BACKMARKET_BASE_URL=self.backmarket_url,
            BACKMARKET_TOKEN=TOKEN,
            BACKMARKET_USER_AGENT=USER_AGENT,
            BACKMARKET_REQUESTS_PER_10S="10000",
            BACKMARKET_MAX_ATTEMPTS="2",
            SYNC_INTERVAL_MINUTES="0",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        env.update(self.settings)
        return env

    def start(self) -> Server:
        """Start (again, after a kill: same port, same database) and wait until it answers."""
        self.starts += 1
        if self.workers == 1:
            command = [STOCK_SYNC, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
            command += ["--port", str(self.port), "--workers", str(self.workers)]
        name = f"server-{self.port}-{self.starts}"
        self.process = Process(name, command, self.environment(), self.tmp / f"{name}.log")
        self.process.start()
        self.process.wait_until_up(f"{self.url}/healthz")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line this server wrote (all its starts)."""
        events = []
        for path in sorted(self.tmp.glob(f"server-{self.port}-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    events.append(json.loads(line))
        return events

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)


# --- the database, read directly -------------------------------------------------------------


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(sa.text(sql), params)).mappings()]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


@dataclass(frozen=True)
class Linked:
    variation_id: int
    uuid: str
    listing_id: int
    quantity: int
    page: int


SENTINEL_STOCK = 9999
LOCKED_STOCK = 2


async def link_catalogue(
    engine: AsyncEngine,
    pages: Sequence[Sequence[dict[str, Any]]],
    *,
    skip_every: int = 10,
    with_stock: bool = True,
) -> list[Linked]:
    """A variation per listing (but every `skip_every`-th, left unknown), with a stock row of
    SENTINEL_STOCK listed and LOCKED_STOCK locked, changed long ago: a row the bulk sync wrote
    holds the simulator's quantity, one it did not still holds the sentinel."""
    linked: list[Linked] = []
    number = 0
    for page_number, page in enumerate(pages, start=1):
        for listing in page:
            number += 1
            if skip_every and number % skip_every == 0:
                continue
            linked.append(
                Linked(
                    variation_id=number,
                    uuid=listing["id"],
                    listing_id=listing["listing_id"],
                    quantity=listing["quantity"],
                    page=page_number,
                )
            )
    assert all(item.quantity != SENTINEL_STOCK for item in linked)
    listed = SENTINEL_STOCK if with_stock else 0
    changed = utcnow() - LONG_AGO
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO variation (id, reference_id, reference_uuid, sku, listed_stock) "
                "VALUES (:id, :reference_id, :reference_uuid, 'OLD-SKU', :listed)"
            ),
            [
                {
                    "id": item.variation_id,
                    "reference_id": str(item.listing_id),
                    "reference_uuid": item.uuid,
                    "listed": listed,
                }
                for item in linked
            ],
        )
        if with_stock:
            await conn.execute(
                sa.text(
                    "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                    "locked_stock, available_stock, last_api_quantity, stock_changed_at, "
                    "created_at) VALUES (:id, 1, :listed, :locked, :available, :listed, "
                    ":changed, :changed)"
                ),
                [
                    {
                        "id": item.variation_id,
                        "listed": SENTINEL_STOCK,
                        "locked": LOCKED_STOCK,
                        "available": SENTINEL_STOCK - LOCKED_STOCK,
                        "changed": changed,
                    }
                    for item in linked
                ],
            )
            # MySQL's triggers stamp inserts with now; move them back as the seed meant.
            await conn.execute(
                sa.text("UPDATE marketplace_stock SET stock_changed_at = :changed"),
                {"changed": changed},
            )
    return linked


async def assert_stock_invariants(engine: AsyncEngine) -> None:
    """On every row: available = max(0, listed - locked); variation.listed_stock = SUM; and each
    history row's after-values are the row's state after it (the next row's before-values, or
    the row as it stands for the last one)."""
    stock = await rows(engine, "SELECT * FROM marketplace_stock")
    wrong_available = [
        row
        for row in stock
        if row["available_stock"] != max(0, row["listed_stock"] - row["locked_stock"])
    ]
    assert wrong_available == [], wrong_available[:5]
    wrong_sum = await rows(
        engine,
        "SELECT v.id, v.listed_stock, COALESCE(SUM(s.listed_stock), 0) AS total FROM variation v "
        "LEFT JOIN marketplace_stock s ON s.variation_id = v.id "
        "GROUP BY v.id, v.listed_stock HAVING v.listed_stock <> COALESCE(SUM(s.listed_stock), 0)",
    )
    assert wrong_sum == [], wrong_sum[:5]
    by_id = {row["id"]: row for row in stock}
    history = await rows(
        engine, "SELECT * FROM marketplace_stock_history ORDER BY marketplace_stock_id, id"
    )
    for current, following in zip(history, [*history[1:], None], strict=True):
        same_row = following is not None and (
            following["marketplace_stock_id"] == current["marketplace_stock_id"]
        )
        if same_row:
            assert following is not None
            state = (following["listed_stock_before"], following["available_stock_before"])
        else:
            row = by_id[current["marketplace_stock_id"]]
            state = (row["listed_stock"], row["available_stock"])
        after = (current["listed_stock_after"], current["available_stock_after"])
        assert after == state, (current, following)


async def written_by_run(engine: AsyncEngine, run_id: int) -> set[int]:
    found = await rows(
        engine,
        "SELECT variation_id FROM marketplace_stock_history WHERE sync_run_id = :run",
        run=run_id,
    )
    return {row["variation_id"] for row in found}


async def assert_whole_pages(
    engine: AsyncEngine, linked: Iterable[Linked], *, run_id: int
) -> set[int]:
    """Every page's variations were written by the run all together or not at all; the pages
    written are returned. A row written holds the simulator's quantity, one not written the
    sentinel, and nothing in between."""
    written = await written_by_run(engine, run_id)
    stock = {
        row["variation_id"]: row["listed_stock"]
        for row in await rows(engine, "SELECT variation_id, listed_stock FROM marketplace_stock")
    }
    by_page: dict[int, list[Linked]] = {}
    for item in linked:
        by_page.setdefault(item.page, []).append(item)
    pages_written = set()
    for page, items in sorted(by_page.items()):
        done = [item.variation_id in written for item in items]
        assert all(done) or not any(done), f"page {page}: {done.count(True)} of {len(done)} written"
        expected = [item.quantity if done[0] else SENTINEL_STOCK for item in items]
        assert [stock[item.variation_id] for item in items] == expected, f"page {page}"
        if done[0]:
            pages_written.add(page)
    return pages_written


async def assert_matches_simulator(engine: AsyncEngine, linked: Iterable[Linked]) -> None:
    stock = {
        row["variation_id"]: row
        for row in await rows(engine, "SELECT * FROM marketplace_stock WHERE marketplace_id = 1")
    }
    variations = {row["id"]: row for row in await rows(engine, "SELECT * FROM variation")}
    for item in linked:
        row = stock[item.variation_id]
        assert row["listed_stock"] == item.quantity, (item, row)
        assert row["last_api_quantity"] == item.quantity, (item, row)
        assert variations[item.variation_id]["listed_stock"] == item.quantity, item


async def wait_for(check: Any, *, timeout_s: float = 30, what: str = "condition") -> Any:
    """Await `check()` until it returns something truthy; tiny sleeps, bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        await asyncio.sleep(0.02)


# A bulk sync slow enough to be caught in the middle: about nine pages a second (a small request
# budget), written in batches of two pages as they come.
PACED_SYNC = {"BACKMARKET_REQUESTS_PER_10S": "100", "SYNC_BATCH_SIZE": "100"}


async def start_sync_holding_last_page(
    http: httpx.AsyncClient, simulator: Simulator, *, pages: int
) -> tuple[int, int]:
    """`POST /sync/bulk` with the catalogue's last page held in the simulator, so the run cannot
    end before the test lets it: (run id, hold id)."""
    last_page = await simulator.hold("/ws/listings", page=pages, method="GET")
    started = await http.post("/sync/bulk")
    assert started.status_code == 202, started.text
    return int(started.json()["run"]["id"]), last_page


async def pages_saved(http: httpx.AsyncClient, run_id: int, *, at_least: int) -> bool:
    """Whether the run's record counts `at_least` pages (saved with each committed batch)."""
    return bool((await run_of(http, run_id))["pages_fetched"] >= at_least)


async def run_of(http: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    answer = await http.get(f"/sync/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()["run"]
    return run


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
