"""1. Bulk sync vs the per-item pattern (the seed note's claim)."""

from __future__ import annotations

import math
import time
from typing import Any

from bench.database import StockState, reset_stock, stock_state
from bench.harness import UNLIMITED_BUDGET, BenchContext, Stack, api_calls, stack, timed
from bench.results import ScenarioResult, Table, Target
from bench.stats import median, ratio

LATENCY_MS = 20.0
FULL_SIZES = [1_000, 5_000, 20_000]
SMOKE_SIZES = [120]
# Per-item reads above this many listings take minutes each: measured `--slow-repeat` times.
SLOW_ABOVE = 5_000
TARGET_SIZE = 20_000
TARGET_SPEEDUP = 100.0


def expected_state(s: Stack) -> list[StockState]:
    return [(e.variation_id, 1, e.quantity, 0, e.quantity, e.quantity) for e in s.catalogue]


async def measure_bulk(
    context: BenchContext, s: Stack, result: ScenarioResult, repeats: int
) -> dict[str, Any]:
    listings = len(s.catalogue)
    seconds, calls, run_seconds = [], [], []
    for rep in range(repeats):
        await reset_stock(s.db)
        await s.simulator.reset_stats()
        run, elapsed = await timed(s.bulk_sync())
        served = api_calls(await s.simulator.stats(), "GET /ws/listings")
        seconds.append(elapsed)
        calls.append(served)
        run_seconds.append(float(run.get("duration_seconds") or math.nan))
        context.log(f"  bulk     {listings:>7} listings  rep {rep + 1}/{repeats}: {elapsed:8.2f} s")
        result.check(
            f"bulk run at {listings} completed", run["status"] == "completed", run["status"]
        )
        result.check(
            f"bulk at {listings}: calls == ceil(N/50) == {math.ceil(listings / 50)}",
            served == math.ceil(listings / 50),
            f"simulator served {served}",
        )
        result.check(
            f"bulk at {listings}: the run's api_calls match the simulator's count",
            run.get("api_calls") == served,
            f"run {run.get('api_calls')}, simulator {served}",
        )
        result.check(
            f"bulk at {listings}: every row updated",
            run.get("updated") == listings,
            f"updated {run.get('updated')}",
        )
    result.check(
        f"bulk at {listings}: stock equals the simulator's",
        await stock_state(s.db) == expected_state(s),
    )
    return {"seconds": seconds, "calls": calls, "run_seconds": run_seconds}


async def measure_per_item(
    context: BenchContext, s: Stack, result: ScenarioResult, repeats: int
) -> dict[str, Any]:
    listings = len(s.catalogue)
    seconds, calls = [], []
    for rep in range(repeats):
        await reset_stock(s.db)
        await s.simulator.reset_stats()
        failures = 0
        started = time.perf_counter()
        for entry in s.catalogue:
            response = await s.quantity(entry.variation_id)
            failures += response.status_code != 200
        elapsed = time.perf_counter() - started
        served = api_calls(await s.simulator.stats(), "GET /ws/listings/{listingId}")
        seconds.append(elapsed)
        calls.append(served)
        context.log(f"  per-item {listings:>7} listings  rep {rep + 1}/{repeats}: {elapsed:8.2f} s")
        result.check(f"per-item at {listings}: every request answered 200", failures == 0)
        result.check(
            f"per-item at {listings}: calls == N", served == listings, f"simulator served {served}"
        )
    result.check(
        f"per-item at {listings}: stock equals the simulator's (same as bulk)",
        await stock_state(s.db) == expected_state(s),
    )
    return {"seconds": seconds, "calls": calls}


async def run(context: BenchContext) -> ScenarioResult:
    options = context.options
    sizes = options.sizes_or(FULL_SIZES, SMOKE_SIZES)
    backend = context.main_backend
    result = ScenarioResult(
        number=1,
        title="Bulk sync vs the per-item pattern",
        setup=(
            f"Simulator latency {LATENCY_MS:.0f} ms a request, one market (fr-fr), no rate limit "
            f"(client budget {UNLIMITED_BUDGET:,}/10 s, the most the service accepts). "
            f"Database: {backend}. "
            "Bulk = `POST /sync/bulk?wait=true`. Per-item = `GET /variations/{id}/quantity` "
            "for every variation, one after another, as the old command did. Each repetition "
            "starts from stock rows reset to 0, so every row is written."
        ),
    )
    points: list[dict[str, Any]] = []
    for listings in sizes:
        slow = listings > SLOW_ABOVE
        async with stack(
            context,
            name=f"s1_{listings}",
            listings=listings,
            backend=backend,
            latency_ms=LATENCY_MS,
        ) as s:
            bulk = await measure_bulk(context, s, result, options.repeats())
            per_item = await measure_per_item(context, s, result, options.repeats(slow=slow))
        points.append(
            {
                "listings": listings,
                "bulk_seconds": median(bulk["seconds"]),
                "bulk_calls": median(bulk["calls"]),
                "bulk_run_seconds": median(bulk["run_seconds"]),
                "per_item_seconds": median(per_item["seconds"]),
                "per_item_calls": median(per_item["calls"]),
                "bulk_repeats": len(bulk["seconds"]),
                "per_item_repeats": len(per_item["seconds"]),
                "raw": {"bulk": bulk, "per_item": per_item},
            }
        )
    result.data["points"] = points
    result.tables.append(table_of(points))
    add_targets(result, points, smoke=options.smoke)
    fewer = [p for p in points if p["per_item_repeats"] < p["bulk_repeats"]]
    if fewer:
        sizes_text = ", ".join(f"{p['listings']:,}" for p in fewer)
        result.notes.append(
            f"Per-item side at {sizes_text} listings: measured {fewer[0]['per_item_repeats']} "
            "time(s) (each pass takes minutes; `--slow-repeat K` measures it K times). "
            "Measured, not extrapolated."
        )
    return result


def table_of(points: list[dict[str, Any]]) -> Table:
    rows = []
    for p in points:
        rows.append(
            [
                f"{p['listings']:,}",
                f"{p['bulk_calls']:,.0f}",
                f"{math.ceil(p['listings'] / 50):,}",
                f"{p['per_item_calls']:,.0f}",
                f"{p['bulk_seconds']:.2f}",
                f"{p['per_item_seconds']:.2f}",
                f"{ratio(p['per_item_seconds'], p['bulk_seconds']):,.0f}x",
                f"{ratio(p['per_item_calls'], p['bulk_calls']):,.0f}x",
                f"{p['bulk_repeats']} / {p['per_item_repeats']}",
            ]
        )
    return Table(
        columns=[
            "listings",
            "bulk calls",
            "ceil(N/50)",
            "per-item calls",
            "bulk time (s)",
            "per-item time (s)",
            "speed-up",
            "fewer calls",
            "runs (bulk / per-item)",
        ],
        rows=rows,
    )


def add_targets(result: ScenarioResult, points: list[dict[str, Any]], *, smoke: bool) -> None:
    calls_ok = all(
        p["bulk_calls"] == math.ceil(p["listings"] / 50) and p["per_item_calls"] == p["listings"]
        for p in points
    )
    result.targets.append(
        Target(
            goal="calls = ceil(N/50) (bulk) vs N (per-item)",
            measured="; ".join(
                f"{p['listings']:,}: {p['bulk_calls']:,.0f} vs {p['per_item_calls']:,.0f}"
                for p in points
            ),
            met=calls_ok,
        )
    )
    at_target = [p for p in points if p["listings"] == TARGET_SIZE]
    speedup = (
        ratio(at_target[0]["per_item_seconds"], at_target[0]["bulk_seconds"]) if at_target else None
    )
    result.targets.append(
        Target(
            goal=f"at {TARGET_SIZE:,} listings bulk at least {TARGET_SPEEDUP:.0f}x faster",
            measured=f"{speedup:,.0f}x" if speedup is not None else "size not measured",
            met=None if speedup is None or smoke else speedup >= TARGET_SPEEDUP,
        )
    )
