"""5. Add-quantity under contention: many concurrent additions to few variations, each
applied exactly once in Back Market (the simulator) and in the database."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import httpx

from bench.database import MARKETPLACE_ID, history_by_variation, stock_state
from bench.harness import BenchContext, Stack, stack
from bench.results import ScenarioResult, Table, Target
from bench.stats import median, percentile

LATENCY_MS = 20.0
CATALOGUE = 1_000
FULL = {"requests": 200, "variations": 20, "concurrency": 50}
SMOKE = {"requests": 40, "variations": 5, "concurrency": 20}


@dataclass(frozen=True)
class Addition:
    number: int
    variation_id: int
    quantity: int


@dataclass
class Answer:
    addition: Addition
    status: int
    seconds: float
    body: dict[str, Any]


def plan(rep: int, *, requests: int, variations: int) -> list[Addition]:
    """Request i adds 1..3 to one of this repetition's own `variations` variations."""
    first = rep * variations + 1
    return [
        Addition(number=i, variation_id=first + i % variations, quantity=1 + i % 3)
        for i in range(requests)
    ]


async def send_all(
    s: Stack, additions: list[Addition], *, concurrency: int, rep: int
) -> list[Answer]:
    gate = asyncio.Semaphore(concurrency)

    async def send(addition: Addition) -> Answer:
        async with gate:
            started = time.perf_counter()
            try:
                response = await s.http.post(
                    f"/variations/{addition.variation_id}/add-quantity",
                    json={"quantity": addition.quantity},
                    headers={"Idempotency-Key": f"bench-{rep}-{addition.number}"},
                )
            except httpx.HTTPError as exc:
                # The service dropped the connection: a failed answer, not a harness crash.
                elapsed = time.perf_counter() - started
                return Answer(addition, 0, elapsed, {"error": f"{type(exc).__name__}: {exc}"})
            elapsed = time.perf_counter() - started
        json_answer = response.headers.get("content-type", "").startswith("application/json")
        return Answer(
            addition, response.status_code, elapsed, response.json() if json_answer else {}
        )

    return list(await asyncio.gather(*(send(addition) for addition in additions)))


async def verify(
    s: Stack,
    result: ScenarioResult,
    *,
    additions: list[Addition],
    answers: list[Answer],
    before: dict[int, int],
) -> None:
    # Only answered additions count: anything else must have left no trace anywhere.
    added: Counter[int] = Counter()
    sent: Counter[int] = Counter()
    for answer in answers:
        if answer.status == 200:
            added[answer.addition.variation_id] += answer.addition.quantity
            sent[answer.addition.variation_id] += 1
    failed = [a for a in answers if a.status != 200]
    statuses = Counter(a.status for a in failed)
    result.check(
        "every add-quantity answered 200",
        not failed,
        f"{len(failed)} of {len(answers)} failed (by status: {dict(statuses)}), e.g. "
        + "; ".join(f"{a.status} {a.body}" for a in failed[:3]),
    )
    uuid_of = {e.variation_id: e.uuid for e in s.catalogue}
    ids = sorted({a.variation_id for a in additions})
    after = {vid: await s.simulator.quantity(uuid_of[vid]) for vid in ids}
    drift = {
        vid: after[vid] - before[vid] - added[vid]
        for vid in ids
        if after[vid] - before[vid] != added[vid]
    }
    result.check(
        "simulator: each variation's stock grew by exactly its answered additions",
        not drift,
        f"units applied at Back Market beyond the answered ones, by variation: {drift}",
    )
    updates = Counter(u["id"] for u in (await s.simulator.stats())["updates"])
    extra_updates = {
        vid: updates[uuid_of[vid]] - sent[vid] for vid in ids if updates[uuid_of[vid]] != sent[vid]
    }
    result.check(
        "simulator: exactly one listing update per answered addition",
        not extra_updates,
        f"updates beyond the answered additions, by variation: {extra_updates}",
    )
    stock = {row[0]: row[2] for row in await stock_state(s.db) if row[1] == MARKETPLACE_ID}
    behind = {vid: (stock.get(vid), after[vid]) for vid in ids if stock.get(vid) != after[vid]}
    result.check(
        "database: listed_stock equals the simulator's after the additions",
        not behind,
        f"(database, simulator) by variation: {behind}",
    )
    history = await history_by_variation(s.db, "add_quantity")
    unrecorded = {
        vid: (len(history.get(vid, [])), sent[vid], sum(history.get(vid, [])), added[vid])
        for vid in ids
        if (len(history.get(vid, [])), sum(history.get(vid, []))) != (sent[vid], added[vid])
    }
    result.check(
        "database: one add_quantity history row per addition, changes summing to the additions",
        not unrecorded,
        f"(rows, answered additions, units recorded, units answered) by variation: {unrecorded}",
    )
    chains: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for answer in answers:
        if answer.status == 200:
            chains[answer.addition.variation_id].append(
                (answer.body["previous_quantity"], answer.body["quantity"])
            )
    result.check(
        "answers: each addition started from the previous one's result (serialised)",
        all(is_chain(links, before[vid]) for vid, links in chains.items()),
    )


def is_chain(links: list[tuple[int, int]], start: int) -> bool:
    """(previous, after) pairs that line up one after another from `start`, none shared."""
    current = start
    remaining = sorted(links)
    for previous, after in remaining:
        if previous != current:
            return False
        current = after
    return True


async def run(context: BenchContext) -> ScenarioResult:
    options = context.options
    shape = SMOKE if options.smoke else FULL
    requests, variations, concurrency = shape["requests"], shape["variations"], shape["concurrency"]
    repeats = options.repeats()
    backend = context.main_backend
    result = ScenarioResult(
        number=5,
        title="Add-quantity under contention",
        setup=(
            f"{requests} `POST /variations/{{id}}/add-quantity` (+1..+3 each, a unique "
            f"Idempotency-Key each) over {variations} variations, {concurrency} in flight at a "
            f"time, simulator latency {LATENCY_MS:.0f} ms, no rate limit. Database: {backend}. "
            "Each repetition uses its own variations. Latency is measured by the client "
            "(the harness) from send to complete answer."
        ),
    )
    walls, p50s, p99s = [], [], []
    async with stack(
        context,
        name="s5",
        listings=max(CATALOGUE, variations * repeats),
        backend=backend,
        latency_ms=LATENCY_MS,
        concurrency=concurrency,
    ) as s:
        uuid_of = {e.variation_id: e.uuid for e in s.catalogue}
        # The database in step with Back Market first, as after any scheduled sync.
        run = await s.bulk_sync()
        result.check("initial bulk sync completed", run["status"] == "completed", run["status"])
        for rep in range(repeats):
            additions = plan(rep, requests=requests, variations=variations)
            ids = sorted({a.variation_id for a in additions})
            before = {vid: await s.simulator.quantity(uuid_of[vid]) for vid in ids}
            await s.simulator.reset_stats()
            started = time.perf_counter()
            answers = await send_all(s, additions, concurrency=concurrency, rep=rep)
            walls.append(time.perf_counter() - started)
            latencies = [a.seconds for a in answers]
            p50s.append(percentile(latencies, 0.5))
            p99s.append(percentile(latencies, 0.99))
            context.log(
                f"  add-quantity rep {rep + 1}/{repeats}: {walls[-1]:.2f} s, "
                f"p50 {p50s[-1] * 1000:.1f} ms, p99 {p99s[-1] * 1000:.1f} ms"
            )
            await verify(s, result, additions=additions, answers=answers, before=before)
    figures = {
        "requests": requests,
        "variations": variations,
        "concurrency": concurrency,
        "wall_seconds": median(walls),
        "p50_ms": median(p50s) * 1000,
        "p99_ms": median(p99s) * 1000,
        "throughput_per_s": requests / median(walls),
        "raw": {"wall": walls, "p50": p50s, "p99": p99s},
    }
    result.data = figures
    result.tables.append(
        Table(
            columns=[
                "requests",
                "variations",
                "in flight",
                "p50 (ms)",
                "p99 (ms)",
                "throughput (req/s)",
            ],
            rows=[
                [
                    requests,
                    variations,
                    concurrency,
                    f"{figures['p50_ms']:.1f}",
                    f"{figures['p99_ms']:.1f}",
                    f"{figures['throughput_per_s']:.1f}",
                ]
            ],
        )
    )
    exactly_once = all(c.passed for c in result.checks)
    result.targets.append(
        Target(
            goal="every addition applied exactly once (simulator and database)",
            measured="yes" if exactly_once else "no",
            met=exactly_once,
        )
    )
    result.notes.append(
        f"Additions to one variation are serialised, so {requests // variations} requests a "
        "variation queue behind each other: each does a read and an update at Back Market "
        f"({2 * LATENCY_MS:.0f} ms of simulator latency) under the variation's lock."
    )
    return result
