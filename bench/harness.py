"""The pieces every scenario stands on: options, a fresh simulator + database + service, timers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.catalogue import CatalogueEntry, check_against_simulator, generated_catalogue
from bench.database import (
    MARKETPLACE_ID,
    Backend,
    BenchDatabase,
    fresh_database,
    seed_catalogue,
)
from bench.processes import (
    ManagedProcess,
    Service,
    ServiceOptions,
    Simulator,
    SimulatorOptions,
    spawn_service,
    spawn_simulator,
    stop_all,
)

# The service refuses a budget above this (app/config.py); it is 1,000 requests a second,
# far above what two cores serve, so it stands for "no rate limit".
UNLIMITED_BUDGET = 10_000
UNLIMITED_UPDATES_PER_HOUR = 1_000_000
SIM_SEED = 42

T = TypeVar("T")


@dataclass
class BenchOptions:
    scenarios: list[int]
    repeat: int = 3
    slow_repeat: int = 1
    smoke: bool = False
    sizes: list[int] | None = None
    million: bool = False
    # A MariaDB server URL without a database; None: SQLite only.
    mysql_server_url: str | None = None
    workdir: Path = Path(".")

    def repeats(self, *, slow: bool = False) -> int:
        if self.smoke:
            return 1
        return min(self.repeat, self.slow_repeat) if slow else self.repeat

    def sizes_or(self, full: list[int], smoke: list[int]) -> list[int]:
        if self.sizes:
            return list(self.sizes)
        return smoke if self.smoke else full

    def size_or(self, full: int, smoke: int) -> int:
        return self.sizes_or([full], [smoke])[0]


@dataclass
class BenchContext:
    options: BenchOptions
    log: Callable[[str], None] = print

    @property
    def logs(self) -> Path:
        return self.options.workdir / "logs"

    @property
    def main_backend(self) -> Backend:
        """Production's database when one is reachable, else the embedded default."""
        return "mariadb" if self.options.mysql_server_url else "sqlite"

    def backends(self) -> list[Backend]:
        return ["mariadb", "sqlite"] if self.options.mysql_server_url else ["sqlite"]


@dataclass
class Stack:
    """A seeded database, the simulator and the service, all fresh."""

    db: BenchDatabase
    simulator: Simulator
    service: Service
    catalogue: list[CatalogueEntry]
    http: httpx.AsyncClient
    budget: int
    extra: dict[str, Any] = field(default_factory=dict)

    async def bulk_sync(self, marketplace_id: int = MARKETPLACE_ID) -> dict[str, Any]:
        """POST /sync/bulk?wait=true for one marketplace; the finished Run."""
        response = await self.http.post(
            "/sync/bulk", params={"wait": "true"}, json={"marketplace_id": marketplace_id}
        )
        if response.status_code != 200:
            raise RuntimeError(f"POST /sync/bulk answered {response.status_code}: {response.text}")
        run: dict[str, Any] = response.json()["run"]
        return run

    async def quantity(self, variation_id: int) -> httpx.Response:
        return await self.http.get(
            f"/variations/{variation_id}/quantity",
            params={"marketplace_id": 1, "refresh": "true"},
        )


@asynccontextmanager
async def stack(
    context: BenchContext,
    *,
    name: str,
    listings: int,
    backend: Backend,
    latency_ms: float = 0.0,
    simulator_limit: int | None = None,
    budget: int = UNLIMITED_BUDGET,
    updates_per_hour: int = UNLIMITED_UPDATES_PER_HOUR,
    concurrency: int = 100,
    service_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Both subprocesses start while the database is created and seeded; all of it goes after."""
    options = context.options
    catalogue = generated_catalogue(listings=listings, seed=SIM_SEED)
    simulator = spawn_simulator(
        SimulatorOptions(
            listings=listings,
            latency_ms=latency_ms,
            requests_per_10s=simulator_limit,
            seed=SIM_SEED,
        ),
        logs=context.logs,
    )
    processes: list[ManagedProcess] = [simulator]
    try:
        async with fresh_database(
            backend, name, workdir=options.workdir, mysql_server_url=options.mysql_server_url
        ) as db:
            service = spawn_service(
                ServiceOptions(
                    database_url=db.url,
                    backmarket_base_url=simulator.base_url,
                    requests_per_10s=budget,
                    updates_per_hour=updates_per_hour,
                    extra_env=tuple((service_env or {}).items()),
                ),
                logs=context.logs,
            )
            processes.insert(0, service)
            try:
                await seed_catalogue(db, catalogue)
                await simulator.wait_ready()
                await check_against_simulator(simulator.base_url, catalogue)
                await service.wait_ready()
                limits = httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                )
                async with httpx.AsyncClient(
                    base_url=service.base_url, timeout=None, limits=limits
                ) as http:
                    yield Stack(db, simulator, service, catalogue, http, budget)
            finally:
                # Before the database goes: the service holds connections to it.
                stop_all(processes)
    finally:
        stop_all(processes)


async def timed(action: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await action
    return result, time.perf_counter() - started


def api_calls(stats: dict[str, Any], method_template: str) -> int:
    """Requests the simulator answered for e.g. "GET /ws/listings" (any status)."""
    prefix = method_template + " "
    return sum(
        count
        for key, count in stats.get("by_endpoint", {}).items()
        if key.startswith(prefix) and key[len(prefix) :].isdigit()
    )
