"""3. Scale: 10k and 100k listings (1M with --million) on MariaDB and SQLite, latency 0, no
rate limit. Total time, fetch time, write rate against the database's own floor, peak RSS."""

from __future__ import annotations

import math
from typing import Any

from app.config import Settings
from app.services.backmarket import BackMarketClient
from bench.catalogue import MARKET
from bench.database import Backend, reset_stock, stock_state, write_floor
from bench.harness import UNLIMITED_BUDGET, BenchContext, Stack, stack, timed
from bench.processes import SIM_TOKEN, USER_AGENT
from bench.results import ScenarioResult, Table, Target
from bench.stats import median, ratio

FULL_SIZES = [10_000, 100_000]
SMOKE_SIZES = [300]
MILLION = 1_000_000
RSS_LIMIT_MIB = 300.0
RSS_TARGET_SIZE = 100_000
SCALE_LIMIT = 12.0
FLOOR_SHARE = 0.5
# The orders watcher would share the client and the database with the sync being measured.
WATCHER_OFF = {"ORDER_SYNC_INTERVAL_SECONDS": "0"}


async def fetch_alone(base_url: str) -> int:
    """Read every page through the service's own client, writing nothing; listings read."""
    settings = Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        backmarket_base_url=base_url,
        backmarket_token=SIM_TOKEN,
        backmarket_user_agent=USER_AGENT,
        backmarket_requests_per_10s=UNLIMITED_BUDGET,
        backmarket_markets=[MARKET],
    )
    listings = 0
    async with BackMarketClient(settings) as client:
        async for page in client.iter_listing_pages(MARKET):
            listings += len(page.listings)
    return listings


async def measure_size(
    context: BenchContext, s: Stack, result: ScenarioResult, *, backend: Backend, repeats: int
) -> dict[str, Any]:
    listings = len(s.catalogue)
    idle_rss = s.service.rss_mib()
    totals, run_seconds, fetches, floors, updated = [], [], [], [], []
    for rep in range(repeats):
        await reset_stock(s.db)
        run, total = await timed(s.bulk_sync())
        totals.append(total)
        run_seconds.append(float(run.get("duration_seconds") or math.nan))
        updated.append(int(run.get("updated") or 0))
        result.check(
            f"{backend} {listings}: run completed, every row updated",
            run["status"] == "completed" and run.get("updated") == listings,
            f"status {run['status']}, updated {run.get('updated')}",
        )
        synced = await stock_state(s.db)
        await reset_stock(s.db)
        floors.append(await write_floor(s.db, synced))
        if rep == 0:
            result.check(
                f"{backend} {listings}: the floor's upsert leaves the same rows as the sync",
                await stock_state(s.db) == synced,
            )
        read, fetch = await timed(fetch_alone(s.simulator.base_url))
        fetches.append(fetch)
        result.check(f"{backend} {listings}: fetch alone read every listing", read == listings)
        context.log(
            f"  {backend:7} {listings:>9} listings rep {rep + 1}/{repeats}: total {total:7.2f} s,"
            f" fetch {fetch:7.2f} s, floor {floors[-1]:7.2f} s"
        )
    total, fetch, floor = median(totals), median(fetches), median(floors)
    # Writes entirely hidden behind the fetch would make the phase vanish.
    write_rate = listings / (total - fetch) if total > fetch else math.inf
    return {
        "backend": backend,
        "listings": listings,
        "total_seconds": total,
        "run_seconds": median(run_seconds),
        "fetch_seconds": fetch,
        "write_phase_seconds": total - fetch,
        "write_rows_per_s": write_rate,
        "end_to_end_rows_per_s": listings / total,
        "floor_seconds": floor,
        "floor_rows_per_s": listings / floor,
        "peak_rss_mib": s.service.peak_rss_mib(),
        "idle_rss_mib": idle_rss,
        "repeats": repeats,
        "raw": {"total": totals, "run": run_seconds, "fetch": fetches, "floor": floors},
    }


def sizes_for(context: BenchContext, backend: Backend) -> list[int]:
    options = context.options
    sizes = options.sizes_or(FULL_SIZES, SMOKE_SIZES)
    if options.million and backend == "mariadb" and not options.smoke:
        sizes = [*sizes, MILLION]
    return sizes


async def run(context: BenchContext) -> ScenarioResult:
    result = ScenarioResult(
        number=3,
        title="Scale",
        setup=(
            "Simulator latency 0, no rate limit (client budget 10,000/10 s, the most the service "
            "accepts), orders watcher off (`ORDER_SYNC_INTERVAL_SECONDS=0`). Each repetition: "
            "stock reset, `POST /sync/bulk?wait=true` (total); the "
            "rows it wrote upserted again by the floor after another reset; then the fetch alone "
            "(every page through `BackMarketClient.iter_listing_pages`, nothing written, in the "
            "harness's process). Write phase = total - fetch alone. Floor = plain multi-row "
            "`INSERT ... ON DUPLICATE KEY UPDATE` (SQLite: `ON CONFLICT DO UPDATE`) of the same "
            "rows into the same table, 1,000 rows a statement, one commit a statement, same "
            "driver and engine settings as the service. Peak RSS = VmHWM of the service process."
        ),
    )
    points: list[dict[str, Any]] = []
    for backend in context.backends():
        for listings in sizes_for(context, backend):
            async with stack(
                context,
                name=f"s3_{backend}_{listings}",
                listings=listings,
                backend=backend,
                service_env=WATCHER_OFF,
            ) as s:
                repeats = context.options.repeats(slow=listings >= MILLION)
                points.append(
                    await measure_size(context, s, result, backend=backend, repeats=repeats)
                )
    result.data["points"] = points
    result.tables.append(table_of(points))
    add_targets(result, points, smoke=context.options.smoke)
    return result


def table_of(points: list[dict[str, Any]]) -> Table:
    rows = []
    for p in points:
        rows.append(
            [
                p["backend"],
                f"{p['listings']:,}",
                f"{p['total_seconds']:.2f}",
                f"{p['fetch_seconds']:.2f}",
                f"{p['write_phase_seconds']:.2f}",
                f"{p['write_rows_per_s']:,.0f}",
                f"{p['end_to_end_rows_per_s']:,.0f}",
                f"{p['floor_rows_per_s']:,.0f}",
                f"{ratio(p['write_rows_per_s'], p['floor_rows_per_s']):.2f}",
                f"{p['peak_rss_mib']:.0f}" if p["peak_rss_mib"] is not None else "n/a",
                p["repeats"],
            ]
        )
    return Table(
        columns=[
            "database",
            "listings",
            "total (s)",
            "fetch alone (s)",
            "write phase (s)",
            "write rate (rows/s)",
            "end-to-end (rows/s)",
            "floor (rows/s)",
            "write / floor",
            "peak RSS (MiB)",
            "runs",
        ],
        rows=rows,
    )


def add_targets(result: ScenarioResult, points: list[dict[str, Any]], *, smoke: bool) -> None:
    judged = None if smoke else True
    for p in points:
        share = ratio(p["write_rows_per_s"], p["floor_rows_per_s"])
        result.targets.append(
            Target(
                goal=f"{p['backend']} {p['listings']:,}: write phase >= {FLOOR_SHARE:.0%} of the "
                "floor's rate",
                measured=f"{share:.2f} of the floor",
                met=judged and share >= FLOOR_SHARE,
            )
        )
        if p["listings"] == RSS_TARGET_SIZE and p["peak_rss_mib"] is not None:
            result.targets.append(
                Target(
                    goal=f"{p['backend']} {p['listings']:,}: peak RSS < {RSS_LIMIT_MIB:.0f} MB",
                    measured=f"{p['peak_rss_mib']:.0f} MiB",
                    met=judged and p["peak_rss_mib"] < RSS_LIMIT_MIB,
                )
            )
    by_backend: dict[str, dict[int, float]] = {}
    for p in points:
        by_backend.setdefault(p["backend"], {})[p["listings"]] = p["total_seconds"]
    for backend, totals in by_backend.items():
        sizes = sorted(totals)
        if len(sizes) < 2:
            continue
        small, large = sizes[0], sizes[1]
        growth = ratio(totals[large], totals[small])
        allowed = SCALE_LIMIT * large / small / 10
        result.targets.append(
            Target(
                goal=f"{backend}: total at {large:,} <= {allowed:.0f}x the total at {small:,}",
                measured=f"{growth:.1f}x",
                met=judged and growth <= allowed,
            )
        )
