"""9 (c). Back Market and Refurbed bulk syncs in one service: one after the other, then at once.

One service process with marketplace 1 on a Back Market simulator and marketplace 4
(`MARKETPLACE_4_KIND=refurbed`) on a Refurbed simulator, each simulator its own process with its
own rate limit and 20 ms latency, the service's budget for each account set to that limit. Both
simulators generate the same SKUs (`SKU-%07d`), so every variation matches on both: marketplace 1
by its reference, marketplace 4 by SKU. Each account has its own bulk-sync lock and request
budget, so the two syncs at once should take about the longer of the two, not their sum.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from bench.database import Backend, reset_stock, seed_stock_rows
from bench.harness import SIM_SEED, BenchContext, Stack, api_calls, stack, timed
from bench.processes import SIM_TOKEN, Simulator, SimulatorOptions, spawn_simulator, stop_all
from bench.results import ScenarioResult, Table, Target

FULL_SIZE = 10_000
# 3 Back Market pages and 2 Refurbed pages: past one page on both, a few seconds in all.
SMOKE_SIZE = 120
LATENCY_MS = 20.0
# Requests per 10 s of each simulator, and the service's budget for each account the same.
LIMIT = 20
BACKMARKET_ID = 1
REFURBED_ID = 4
BACKMARKET_PAGE = 50
REFURBED_PAGE = 100
# The simulators' windows are fixed 10 s ones aligned to Unix time: the runs at once start
# once the windows the runs one after the other used are over.
SETTLE_S = 10.5
LIST_OFFERS_RPC = "OfferService/ListOffers"
LISTINGS_ENDPOINT = "GET /ws/listings"
# The orders watchers would spend both accounts' budgets beside the syncs being measured.
WATCHER_OFF = {"ORDER_SYNC_INTERVAL_SECONDS": "0"}
NAMES = {BACKMARKET_ID: "Back Market (1)", REFURBED_ID: "Refurbed (4)"}


def refurbed_environment(refurbed: Simulator) -> dict[str, str]:
    return {
        **WATCHER_OFF,
        f"MARKETPLACE_{REFURBED_ID}_KIND": "refurbed",
        f"MARKETPLACE_{REFURBED_ID}_TOKEN": SIM_TOKEN,
        f"MARKETPLACE_{REFURBED_ID}_BASE_URL": refurbed.base_url,
        f"MARKETPLACE_{REFURBED_ID}_REQUESTS_PER_10S": str(LIMIT),
    }


async def served_calls(s: Stack, refurbed: Simulator) -> dict[int, dict[str, int]]:
    """Per marketplace: feed calls and 429s as its simulator counted them."""
    backmarket_stats, refurbed_stats = await asyncio.gather(s.simulator.stats(), refurbed.stats())
    return {
        BACKMARKET_ID: {
            "calls": api_calls(backmarket_stats, LISTINGS_ENDPOINT),
            "status_429": int(backmarket_stats["status_429"]),
        },
        REFURBED_ID: {
            "calls": int(refurbed_stats["by_method"].get(LIST_OFFERS_RPC, 0)),
            "status_429": int(refurbed_stats["status_429"]),
        },
    }


async def timed_sync(s: Stack, marketplace_id: int) -> tuple[dict[str, Any], float]:
    return await timed(s.bulk_sync(marketplace_id))


async def measure_mode(
    s: Stack, refurbed: Simulator, *, mode: str
) -> tuple[dict[int, tuple[dict[str, Any], float]], float, dict[int, dict[str, int]]]:
    """Both syncs one after the other or at once: per marketplace (run, seconds), the wall
    time of both, and the simulators' counts."""
    await reset_stock(s.db)
    await asyncio.gather(s.simulator.reset_stats(), refurbed.reset_stats())
    started = asyncio.get_running_loop().time()
    if mode == "one after the other":
        backmarket = await timed_sync(s, BACKMARKET_ID)
        refurbed_run = await timed_sync(s, REFURBED_ID)
    else:
        backmarket, refurbed_run = await asyncio.gather(
            timed_sync(s, BACKMARKET_ID), timed_sync(s, REFURBED_ID)
        )
    wall = asyncio.get_running_loop().time() - started
    served = await served_calls(s, refurbed)
    return {BACKMARKET_ID: backmarket, REFURBED_ID: refurbed_run}, wall, served


async def measure_backend(
    context: BenchContext, result: ScenarioResult, *, backend: Backend, listings: int
) -> list[dict[str, Any]]:
    floors = {
        BACKMARKET_ID: math.ceil(listings / BACKMARKET_PAGE),
        REFURBED_ID: math.ceil(listings / REFURBED_PAGE),
    }
    refurbed = spawn_simulator(
        SimulatorOptions(
            listings=listings,
            latency_ms=LATENCY_MS,
            requests_per_10s=LIMIT,
            seed=SIM_SEED,
            kind="refurbed",
        ),
        logs=context.logs,
    )
    points: list[dict[str, Any]] = []
    try:
        async with stack(
            context,
            name=f"s9c_{backend}_{listings}",
            listings=listings,
            backend=backend,
            latency_ms=LATENCY_MS,
            simulator_limit=LIMIT,
            budget=LIMIT,
            service_env=refurbed_environment(refurbed),
        ) as s:
            await refurbed.wait_ready()
            # The service created marketplace 4's row at start-up.
            await seed_stock_rows(s.db, s.catalogue, marketplace_id=REFURBED_ID)
            for mode in ("one after the other", "at once"):
                if not context.options.smoke:
                    await asyncio.sleep(SETTLE_S)
                runs, wall, served = await measure_mode(s, refurbed, mode=mode)
                point: dict[str, Any] = {
                    "backend": backend,
                    "listings": listings,
                    "mode": mode,
                    "wall_seconds": wall,
                    "runs": {},
                }
                for marketplace_id, (run, seconds) in runs.items():
                    label = f"{backend} {mode}, {NAMES[marketplace_id]}"
                    floor = floors[marketplace_id]
                    result.check(
                        f"{label}: run completed",
                        run["status"] == "completed",
                        f"status {run['status']}",
                    )
                    result.check(
                        f"{label}: every variation matched",
                        run.get("matched") == listings and run.get("unknown_listings") == 0,
                        f"matched {run.get('matched')}, unknown {run.get('unknown_listings')}",
                    )
                    result.check(
                        f"{label}: calls at the floor ({floor})",
                        run.get("api_calls") == served[marketplace_id]["calls"] == floor,
                        f"run {run.get('api_calls')}, simulator {served[marketplace_id]['calls']}",
                    )
                    point["runs"][marketplace_id] = {
                        "seconds": seconds,
                        "duration_seconds": run.get("duration_seconds"),
                        "api_calls": run.get("api_calls"),
                        "served_calls": served[marketplace_id]["calls"],
                        "status_429": served[marketplace_id]["status_429"],
                        "matched": run.get("matched"),
                        "updated": run.get("updated"),
                        "status": run["status"],
                    }
                points.append(point)
                context.log(
                    f"  {backend:7} {listings} {mode:19}: wall {wall:6.1f} s; "
                    + "; ".join(
                        f"{NAMES[m]} {r['seconds']:.1f} s, {r['api_calls']} calls, "
                        f"{r['status_429']} x 429"
                        for m, r in point["runs"].items()
                    )
                )
    finally:
        stop_all([refurbed])
    return points


def table_of(points: list[dict[str, Any]]) -> Table:
    rows = []
    for point in points:
        backmarket, refurbed = point["runs"][BACKMARKET_ID], point["runs"][REFURBED_ID]
        rows.append(
            [
                point["backend"],
                point["mode"],
                f"{backmarket['seconds']:.1f}",
                f"{backmarket['api_calls']}",
                f"{refurbed['seconds']:.1f}",
                f"{refurbed['api_calls']}",
                f"{backmarket['status_429'] + refurbed['status_429']}",
                f"{point['wall_seconds']:.1f}",
            ]
        )
    return Table(
        title="(c) Back Market and Refurbed bulk syncs in one service: one after the other, "
        "then at once",
        columns=[
            "database",
            "syncs",
            "Back Market (s)",
            "Back Market calls",
            "Refurbed (s)",
            "Refurbed calls",
            "429s",
            "wall time, both (s)",
        ],
        rows=rows,
    )


def overlap_targets(points: list[dict[str, Any]], *, smoke: bool) -> list[Target]:
    """At once: the wall time of both within 10 % of the longer sync alone (one after the
    other), where their sum is the alternative."""
    targets = []
    for backend in dict.fromkeys(point["backend"] for point in points):
        by_mode = {point["mode"]: point for point in points if point["backend"] == backend}
        alone = by_mode["one after the other"]["runs"]
        longer = max(run["seconds"] for run in alone.values())
        total = sum(run["seconds"] for run in alone.values())
        at_once = by_mode["at once"]["wall_seconds"]
        targets.append(
            Target(
                goal=f"{backend}: both syncs at once take about the longer one alone "
                "(<= 1.1 x), not the sum",
                measured=f"{at_once:.1f} s at once; longer alone {longer:.1f} s, sum {total:.1f} s",
                met=None if smoke else at_once <= 1.1 * longer,
            )
        )
    return targets


async def measure(context: BenchContext, result: ScenarioResult) -> None:
    """Part (c) of scenario 9: its table, checks, targets and figures added to `result`."""
    listings = context.options.size_or(FULL_SIZE, SMOKE_SIZE)
    result.setup += " " + setup_text(listings)
    points: list[dict[str, Any]] = []
    for backend in context.backends():
        points += await measure_backend(context, result, backend=backend, listings=listings)
    result.data["two_marketplaces"] = {"listings": listings, "limit": LIMIT, "points": points}
    result.tables.append(table_of(points))
    result.targets += overlap_targets(points, smoke=context.options.smoke)


def setup_text(listings: int) -> str:
    return (
        "(c) one service process with marketplace 1 on a Back Market simulator and marketplace "
        "4 (`MARKETPLACE_4_KIND=refurbed`) on a Refurbed simulator, each its own process: "
        f"{listings:,} listings / offers of the same SKUs, each simulator {LATENCY_MS:.0f} ms "
        f"latency and {LIMIT} requests per fixed 10 s window, the service's budget for each "
        f"account {LIMIT} / 10 s (`BACKMARKET_REQUESTS_PER_10S`, "
        "`MARKETPLACE_4_REQUESTS_PER_10S`), orders watcher off. Every variation has a stock row "
        "on both (stock 0, at rest; reset before each pair of runs) and matches on both: "
        "marketplace 1 by reference, marketplace 4 by SKU. One after the other: "
        "`POST /sync/bulk?wait=true` for marketplace 1, then for marketplace 4; at once: both "
        f"POSTs sent together, {SETTLE_S} s after the first pair (fresh windows). Each sync's "
        "time is its request's, as the harness saw it; calls are the run's `api_calls` (a check "
        "holds them equal to the simulator's count and to the floor)."
    )
