"""8. Reads under load (issue 11): stored reads, one variation and fifty at a time, from
concurrent clients while a bulk sync of the whole catalogue writes the same rows."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from bench.database import Backend, reset_stock, stock_state
from bench.harness import BenchContext, Stack, stack, timed
from bench.results import ScenarioResult, Table
from bench.stats import percentile

FULL_SIZE = 100_000
SMOKE_SIZE = 500
SINGLE_CLIENTS = 4
BATCH_CLIENTS = 4
BATCH_IDS = 50
FULL_IDLE_S = 10.0
SMOKE_IDLE_S = 1.0


@dataclass
class ReadLog:
    """One kind of read: its latencies, and the answers that broke an invariant."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def figures(self, seconds: float) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "per_second": len(self.latencies) / seconds if seconds else float("nan"),
            "p50_ms": percentile(self.latencies, 0.5) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "failures": len(self.failures),
            "first_failures": self.failures[:5],
        }


def judge(row: dict[str, Any], synced: dict[int, int]) -> str | None:
    """What is wrong with one stored quantity, or None.

    Every row is either at rest (0, after the reset) or at the simulator's quantity (written by
    the sync); with one marketplace the variation's sum equals the row's listed stock.
    """
    variation_id = row["variation_id"]
    listed, locked = row["quantity"], row["locked_stock"]
    if row["available_stock"] != max(0, listed - locked):
        return f"{variation_id}: available {row['available_stock']} for {listed} - {locked}"
    if listed not in (0, synced[variation_id]):
        return f"{variation_id}: quantity {listed}, neither 0 nor {synced[variation_id]}"
    if row["variation_listed_stock"] != listed:
        return f"{variation_id}: variation sum {row['variation_listed_stock']} != {listed}"
    return None


async def single_reader(
    s: Stack, log: ReadLog, synced: dict[int, int], rng: random.Random, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        variation_id = rng.randint(1, len(synced))
        started = time.perf_counter()
        response = await s.http.get(
            f"/variations/{variation_id}/quantity",
            params={"marketplace_id": 1, "refresh": "false"},
        )
        log.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            log.failures.append(f"{variation_id}: status {response.status_code}")
            continue
        problem = judge(response.json(), synced)
        if problem:
            log.failures.append(problem)


async def batch_reader(
    s: Stack, log: ReadLog, synced: dict[int, int], rng: random.Random, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        ids = rng.sample(range(1, len(synced) + 1), BATCH_IDS)
        started = time.perf_counter()
        response = await s.http.get(
            "/variations/quantities",
            params={"ids": ",".join(map(str, ids)), "marketplace_id": 1},
        )
        log.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            log.failures.append(f"batch: status {response.status_code}")
            continue
        body = response.json()
        rows = body["quantities"]
        if body["unknown_ids"] or sorted(r["variation_id"] for r in rows) != sorted(ids):
            log.failures.append(f"batch: {len(rows)} rows, unknown {body['unknown_ids'][:5]}")
        log.failures += [p for p in (judge(row, synced) for row in rows) if p]


async def load(
    s: Stack, synced: dict[int, int], stop: asyncio.Event, *, seed: int
) -> tuple[ReadLog, ReadLog, float]:
    """Both kinds of reader until `stop` is set; their logs and how long they ran."""
    single, batch = ReadLog(), ReadLog()
    started = time.perf_counter()
    await asyncio.gather(
        *(
            single_reader(s, single, synced, random.Random(seed + n), stop)
            for n in range(SINGLE_CLIENTS)
        ),
        *(
            batch_reader(s, batch, synced, random.Random(seed + 100 + n), stop)
            for n in range(BATCH_CLIENTS)
        ),
    )
    return single, batch, time.perf_counter() - started


async def load_for(
    s: Stack, synced: dict[int, int], seconds: float, *, seed: int
) -> tuple[ReadLog, ReadLog, float]:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return await load(s, synced, stop, seed=seed)


async def measure_backend(
    context: BenchContext, result: ScenarioResult, backend: Backend, listings: int
) -> dict[str, Any]:
    idle_s = SMOKE_IDLE_S if context.options.smoke else FULL_IDLE_S
    async with stack(
        context,
        name=f"s8_{backend}",
        listings=listings,
        backend=backend,
        concurrency=SINGLE_CLIENTS + BATCH_CLIENTS + 2,
        service_env={"ORDER_SYNC_INTERVAL_SECONDS": "0"},
    ) as s:
        synced = {entry.variation_id: entry.quantity for entry in s.catalogue}
        alone_run, alone_s = await timed(s.bulk_sync())
        await reset_stock(s.db)
        stop = asyncio.Event()
        reading = asyncio.create_task(load(s, synced, stop, seed=1))
        loaded_run, loaded_s = await timed(s.bulk_sync())
        stop.set()
        single, batch, during_s = await reading
        idle_single, idle_batch, idle_elapsed = await load_for(s, synced, idle_s, seed=2)
        rows = await stock_state(s.db)
    label = f"{backend} {listings:,}"
    for name, run in (("alone", alone_run), ("under load", loaded_run)):
        result.check(
            f"{label}: sync {name} completed, every row updated",
            run["status"] == "completed" and run.get("updated") == listings,
            f"status {run['status']}, updated {run.get('updated')}",
        )
    for name, log in (
        ("single reads during the sync", single),
        ("batch reads during the sync", batch),
        ("single reads after it", idle_single),
        ("batch reads after it", idle_batch),
    ):
        result.check(
            f"{label}: {name}: every answer 200 and consistent",
            not log.failures,
            f"{len(log.failures)} of {len(log.latencies)}: {log.failures[:3]}",
        )
    wrong = sum(1 for row in rows if row[2] != synced[row[0]] or row[4] != max(0, row[2] - row[3]))
    result.check(
        f"{label}: every row at the simulator's quantity at the end", wrong == 0, f"{wrong}"
    )
    figures: dict[str, Any] = {
        "backend": backend,
        "listings": listings,
        "sync_alone_seconds": alone_s,
        "sync_loaded_seconds": loaded_s,
        "slowdown": loaded_s / alone_s - 1,
        "during": {"single": single.figures(during_s), "batch": batch.figures(during_s)},
        "idle": {
            "single": idle_single.figures(idle_elapsed),
            "batch": idle_batch.figures(idle_elapsed),
        },
    }
    during = figures["during"]
    context.log(
        f"  {label}: sync alone {alone_s:.1f} s, under load {loaded_s:.1f} s; during it single "
        f"{during['single']['per_second']:.0f} req/s p50 {during['single']['p50_ms']:.1f} ms p99 "
        f"{during['single']['p99_ms']:.1f} ms, batch {during['batch']['per_second']:.0f} req/s "
        f"p50 {during['batch']['p50_ms']:.1f} ms p99 {during['batch']['p99_ms']:.1f} ms"
    )
    return figures


async def run(context: BenchContext) -> ScenarioResult:
    listings = context.options.size_or(FULL_SIZE, SMOKE_SIZE)
    idle_s = SMOKE_IDLE_S if context.options.smoke else FULL_IDLE_S
    result = ScenarioResult(
        number=8,
        title="Reads under load during a bulk sync",
        setup=(
            f"{listings:,} listings, simulator latency 0 and no rate limit (client budget "
            "10,000/10 s), so the sync is bound by the database; orders watcher off. Load: "
            f"{SINGLE_CLIENTS} clients sending `GET /variations/{{id}}/quantity?refresh=false` "
            f"and {BATCH_CLIENTS} sending `GET /variations/quantities?ids=` ({BATCH_IDS} random "
            "ids), each one request after another, over random variations. Per database: the "
            "sync alone (`POST /sync/bulk?wait=true`), the stock reset, the same sync with the "
            f"load running from its start to its end, then the load alone for {idle_s:.0f} s. "
            "One run each. Every answer is checked: 200, `available_stock = max(0, quantity - "
            "locked_stock)`, quantity either 0 (the reset) or the simulator's, the variation's "
            "sum equal to the row (one marketplace); batch answers hold exactly the ids asked."
        ),
    )
    points = [
        await measure_backend(context, result, backend, listings) for backend in context.backends()
    ]
    result.data = {"points": points}
    result.tables += tables_of(points)
    result.notes.append(
        "The load generator is the harness, one Python process on the same 2 cores as the "
        "service, the database and the simulator: throughput is what this machine serves with "
        "all of them on it, not the service's ceiling."
    )
    return result


def tables_of(points: list[dict[str, Any]]) -> list[Table]:
    reads, syncs = [], []
    for p in points:
        for phase, name in (("during", "during the sync"), ("idle", "no sync")):
            for kind, title in (("single", "one id"), ("batch", f"{BATCH_IDS} ids")):
                f = p[phase][kind]
                reads.append(
                    [
                        p["backend"],
                        name,
                        title,
                        f"{f['requests']:,}",
                        f"{f['per_second']:.0f}",
                        f"{f['p50_ms']:.1f}",
                        f"{f['p99_ms']:.1f}",
                    ]
                )
        syncs.append(
            [
                p["backend"],
                f"{p['listings']:,}",
                f"{p['sync_alone_seconds']:.2f}",
                f"{p['sync_loaded_seconds']:.2f}",
                f"{p['slowdown']:+.0%}",
            ]
        )
    return [
        Table(
            title="Stored reads",
            columns=["database", "while", "read", "requests", "req/s", "p50 (ms)", "p99 (ms)"],
            rows=reads,
        ),
        Table(
            title="The bulk sync with and without the load",
            columns=["database", "listings", "alone (s)", "under load (s)", "change"],
            rows=syncs,
        ),
    ]
