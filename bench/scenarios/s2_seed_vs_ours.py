"""2. The seed application's way (14 markets, one request at a time) vs ours (one market,
concurrent pages), on the same catalogue; both must leave identical stock."""

from __future__ import annotations

import math
from typing import Any

from bench.database import reset_stock, stock_state, variation_totals
from bench.harness import BenchContext, Stack, api_calls, stack, timed
from bench.results import ScenarioResult, Table, Target
from bench.seed_app import SEED_PAGE_SIZE, seed_app_sync
from bench.stats import median, ratio
from simulator.config import EU_MARKETS

LATENCY_MS = 20.0
FULL_SIZE = 20_000
SMOKE_SIZE = 120


async def measure_seed_way(
    context: BenchContext, s: Stack, result: ScenarioResult, repeats: int
) -> dict[str, Any]:
    listings = len(s.catalogue)
    expected_calls = len(EU_MARKETS) * math.ceil(listings / SEED_PAGE_SIZE)
    seconds, calls = [], []
    for rep in range(repeats):
        await reset_stock(s.db)
        await s.simulator.reset_stats()
        outcome, elapsed = await timed(
            seed_app_sync(base_url=s.simulator.base_url, db=s.db, catalogue=s.catalogue)
        )
        served = api_calls(await s.simulator.stats(), "GET /ws/listings")
        seconds.append(elapsed)
        calls.append(served)
        context.log(f"  seed way {listings:>7} listings  rep {rep + 1}/{repeats}: {elapsed:8.2f} s")
        result.check(
            f"seed way: {len(EU_MARKETS)} markets x ceil(N/{SEED_PAGE_SIZE}) "
            f"= {expected_calls} calls",
            served == expected_calls == outcome.requests,
            f"simulator served {served}, loop sent {outcome.requests}",
        )
        result.check("seed way: every listing known", outcome.unknown == 0, f"{outcome.unknown}")
    return {"seconds": seconds, "calls": calls}


async def measure_ours(
    context: BenchContext, s: Stack, result: ScenarioResult, repeats: int
) -> dict[str, Any]:
    listings = len(s.catalogue)
    seconds, calls = [], []
    for rep in range(repeats):
        await reset_stock(s.db)
        await s.simulator.reset_stats()
        run, elapsed = await timed(s.bulk_sync())
        served = api_calls(await s.simulator.stats(), "GET /ws/listings")
        seconds.append(elapsed)
        calls.append(served)
        context.log(f"  ours     {listings:>7} listings  rep {rep + 1}/{repeats}: {elapsed:8.2f} s")
        result.check("ours: run completed", run["status"] == "completed", run["status"])
        result.check(
            "ours: every row updated",
            run.get("updated") == listings,
            f"updated {run.get('updated')}, skipped as newer {run.get('skipped_newer')}",
        )
        result.check(
            "ours: ceil(N/50) calls",
            served == math.ceil(listings / 50),
            f"simulator served {served}",
        )
    return {"seconds": seconds, "calls": calls}


async def run(context: BenchContext) -> ScenarioResult:
    options = context.options
    listings = options.size_or(FULL_SIZE, SMOKE_SIZE)
    backend = context.main_backend
    result = ScenarioResult(
        number=2,
        title="The seed application's way vs ours",
        setup=(
            f"{listings:,} listings, simulator latency {LATENCY_MS:.0f} ms, no rate limit. "
            f"Database: {backend}. Seed way: its `getAllListings` loop rebuilt in "
            f"`bench/seed_app.py`: all {len(EU_MARKETS)} EU markets one after another, every "
            f"page one after another, `page-size={SEED_PAGE_SIZE}` (what its code sends), each "
            "page's stock written through `app.services.stock.write_observations`. Ours: "
            "`POST /sync/bulk?wait=true`, one market, concurrent pages."
        ),
    )
    async with stack(
        context, name="s2", listings=listings, backend=backend, latency_ms=LATENCY_MS
    ) as s:
        seed_way = await measure_seed_way(context, s, result, options.repeats(slow=True))
        seed_stock, seed_totals = await stock_state(s.db), await variation_totals(s.db)
        ours = await measure_ours(context, s, result, options.repeats())
        our_stock, our_totals = await stock_state(s.db), await variation_totals(s.db)
    identical = seed_stock == our_stock and seed_totals == our_totals
    result.check(
        "both ways leave identical marketplace_stock and variation.listed_stock", identical
    )
    figures: dict[str, Any] = {
        "listings": listings,
        "seed_seconds": median(seed_way["seconds"]),
        "seed_calls": median(seed_way["calls"]),
        "ours_seconds": median(ours["seconds"]),
        "ours_calls": median(ours["calls"]),
        "seed_repeats": len(seed_way["seconds"]),
        "ours_repeats": len(ours["seconds"]),
        "raw": {"seed_way": seed_way, "ours": ours},
    }
    result.data = figures
    result.tables.append(
        Table(
            columns=["way", "API calls", "time (s)", "runs"],
            rows=[
                [
                    f"seed app ({len(EU_MARKETS)} markets, sequential)",
                    f"{figures['seed_calls']:,.0f}",
                    f"{figures['seed_seconds']:.2f}",
                    figures["seed_repeats"],
                ],
                [
                    "ours (1 market, concurrent)",
                    f"{figures['ours_calls']:,.0f}",
                    f"{figures['ours_seconds']:.2f}",
                    figures["ours_repeats"],
                ],
                [
                    "ratio",
                    f"{ratio(figures['seed_calls'], figures['ours_calls']):.0f}x fewer",
                    f"{ratio(figures['seed_seconds'], figures['ours_seconds']):.0f}x faster",
                    "",
                ],
            ],
        )
    )
    result.targets.append(
        Target(
            goal="both ways leave identical stock in the database",
            measured="identical" if identical else "different",
            met=identical,
        )
    )
    if figures["seed_repeats"] < figures["ours_repeats"]:
        result.notes.append(
            f"The seed way was measured {figures['seed_repeats']} time(s) (one pass takes "
            "minutes; `--slow-repeat K` measures it K times)."
        )
    result.notes.append(
        "The seed app's page size is taken from its public code (`getAllListings` sends "
        "`page-size=50`); FACTS.md's 553 s a run was with Back Market's real latency."
    )
    return result
