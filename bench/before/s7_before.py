"""Scenario 7, the BEFORE side: live reads during a bulk sync, and sales, on commit 4dbc328.

Commit 4dbc328 is the code just before 9607f39 (orders watcher, live reads first in the
request budget). This script starts that commit's own simulator (`python -m simulator`) and
service (`stock-sync serve`, which migrates the database at start-up), both as subprocesses,
and measures:

1. a full bulk sync (`POST /sync/bulk`) of N listings under the simulator's limit of 20
   requests / 10 s (then a 10 s block), client budget `BACKMARKET_REQUESTS_PER_10S=20`,
   simulator latency 20 ms; `--reads-after` s into it, `--reads` live reads
   `GET /variations/{id}/quantity?refresh=true` one after another (latency of each);
2. sales: after that sync, customer orders in the simulator (`POST /_sim/listings/{id}/orders`);
   the database is polled for `--quiet-window` s (the old service has no orders watcher, so
   nothing should change), then a second bulk sync runs and the time until each sale shows
   in `marketplace_stock` is recorded.

Run it from a checkout of 4dbc328 with that checkout's venv (`pip install -e .`); the
figures in BENCHMARKS.md (scenario 7, "before") come from two such runs:

    git clone . /tmp/before && git -C /tmp/before checkout 4dbc328
    cp bench/before/s7_before.py /tmp/ && cd /tmp/before
    python3 -m venv .venv && .venv/bin/pip install -e .
    mysql -uroot -h127.0.0.1 -e 'CREATE DATABASE IF NOT EXISTS test_before'
    .venv/bin/python /tmp/s7_before.py \
        --database-url mysql+aiomysql://root@127.0.0.1:3306/test_before

`--database-url sqlite+aiosqlite:////tmp/s7_before.db` works too. The database's tables are
dropped (MariaDB: every table of that database) before the run: give it a database of its own.
Results are printed and written as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

REPO = Path.cwd()
sys.path.insert(0, str(REPO))

from app.models import MarketplaceStock, Variation, table_of  # noqa: E402
from simulator.store import ListingStore  # noqa: E402

SIM_TOKEN = "sim-token"
USER_AGENT = "BM-Bench-StockSync;bench@example.com"
SEED = 42
MARKETPLACE_ID = 1
AT_REST = datetime(2000, 1, 1)
variation_table = table_of(Variation)
stock_table = table_of(MarketplaceStock)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=REPO,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


async def empty_database(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        if make_url(url).get_backend_name() == "mysql":
            names = (await conn.execute(sa.text("SHOW TABLES"))).scalars().all()
            await conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
            for name in names:
                await conn.execute(sa.text(f"DROP TABLE `{name}`"))
            await conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
        else:
            path = make_url(url).database
            if path:
                for leftover in (path, f"{path}-wal", f"{path}-shm"):
                    Path(leftover).unlink(missing_ok=True)  # noqa: ASYNC240 (set-up)
    await engine.dispose()


def catalogue(listings: int) -> list[dict[str, Any]]:
    """The simulator's listings, rebuilt from its seed: variation i + 1 is listing i."""
    store = ListingStore(size=listings, seed=SEED, markets=("fr-fr",))
    rows = []
    for index in range(listings):
        identity = store.identity(index)
        rows.append(
            {
                "variation_id": index + 1,
                "listing_id": identity.listing_id,
                "uuid": identity.id,
                "sku": identity.sku,
                "quantity": store.quantity(index),
            }
        )
    return rows


async def seed(engine: Any, entries: list[dict[str, Any]]) -> None:
    """One variation and one stock row (stock 0, changed long ago) per listing."""
    for start in range(0, len(entries), 5000):
        chunk = entries[start : start + 5000]
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(variation_table),
                [
                    {
                        "id": e["variation_id"],
                        "reference_id": str(e["listing_id"]),
                        "reference_uuid": e["uuid"],
                        "sku": e["sku"],
                        "listed_stock": 0,
                    }
                    for e in chunk
                ],
            )
            await conn.execute(
                sa.insert(stock_table),
                [
                    {
                        "variation_id": e["variation_id"],
                        "marketplace_id": MARKETPLACE_ID,
                        "listed_stock": 0,
                        "locked_stock": 0,
                        "available_stock": 0,
                        "stock_changed_at": AT_REST,
                    }
                    for e in chunk
                ],
            )


async def listed(engine: Any, variation_id: int) -> int | None:
    query = sa.select(stock_table.c.listed_stock).where(
        stock_table.c.variation_id == variation_id,
        stock_table.c.marketplace_id == MARKETPLACE_ID,
    )
    async with engine.connect() as conn:
        value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else int(value)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), as bench/stats.py's: this
    script runs from an old checkout whose installed packages do not include `bench`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def start_sync(http: httpx.AsyncClient) -> int:
    response = await http.post("/sync/bulk", json={})
    if response.status_code != 202:
        raise RuntimeError(f"POST /sync/bulk answered {response.status_code}: {response.text}")
    return int(response.json()["run"]["id"])


async def run_of(http: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    response = await http.get(f"/sync/runs/{run_id}")
    response.raise_for_status()
    run: dict[str, Any] = response.json()["run"]
    return run


async def finished(http: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    while (run := await run_of(http, run_id))["status"] == "running":  # noqa: ASYNC110
        await asyncio.sleep(0.25)
    return run


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (set-up)
    py = sys.executable
    sim_port, svc_port = free_port(), free_port()
    sim_url, svc_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{svc_port}"
    entries = catalogue(args.listings)
    await empty_database(args.database_url)

    simulator = spawn(
        [py, "-m", "simulator", "--port", str(sim_port), "--listings", str(args.listings),
         "--latency-ms", str(args.latency_ms), "--requests-per-10s", str(args.limit),
         "--seed", str(SEED), "--token", SIM_TOKEN],
        {},
        logs / "simulator.log",
    )  # fmt: skip
    service = spawn(
        [str(Path(py).parent / "stock-sync"), "serve", "--port", str(svc_port)],
        {
            "DATABASE_URL": args.database_url,
            "BACKMARKET_BASE_URL": sim_url,
            "BACKMARKET_TOKEN": SIM_TOKEN,
            "BACKMARKET_USER_AGENT": USER_AGENT,
            "BACKMARKET_MARKETS": "fr-fr",
            "BACKMARKET_REQUESTS_PER_10S": str(args.limit),
            "BACKMARKET_UPDATES_PER_HOUR": "1000000",
            "SYNC_INTERVAL_MINUTES": "0",
            "API_KEYS": "",
            "RUN_MIGRATIONS_ON_STARTUP": "true",
        },
        logs / "service.log",
    )
    engine = create_async_engine(args.database_url)
    result: dict[str, Any] = {"listings": args.listings, "database": args.database_url}
    try:
        await wait_ready(f"{sim_url}/_sim/config", simulator)
        await wait_ready(f"{svc_url}/readyz", service)  # migrations ran in its lifespan
        await seed(engine, entries)
        async with (
            httpx.AsyncClient(base_url=sim_url, timeout=30) as sim,
            httpx.AsyncClient(base_url=svc_url, timeout=None) as http,
        ):
            for e in (entries[0], entries[-1]):
                seen = (await sim.get(f"/_sim/listings/{e['uuid']}/quantity")).json()
                assert (seen["listing_id"], seen["quantity"]) == (e["listing_id"], e["quantity"])
            config = (await sim.get("/_sim/config")).json()
            result["simulator"] = {
                k: config[k] for k in ("requests_per_10s", "rate_limit_block_s", "latency_ms")
            }

            rng = random.Random(7)
            # Sales on listings at the start, middle and end of the export (pages 1, ~N/2, last).
            n = len(entries)
            to_sell = [
                next(entries[j] for j in range(i, 0, -1) if entries[j]["quantity"] >= 2)
                for i in (10, n // 2 + 10, n - 10)
            ]
            sold = {e["variation_id"] for e in to_sell}
            to_read = rng.sample([e for e in entries if e["variation_id"] not in sold], args.reads)

            # 1. Bulk sync with live reads `reads_after` s into it.
            await sim.post("/_sim/stats/reset")
            started = time.perf_counter()
            run_id = await start_sync(http)
            await asyncio.sleep(max(0.0, started + args.reads_after - time.perf_counter()))
            reads: list[dict[str, Any]] = []
            for e in to_read:
                at = time.perf_counter()
                response = await http.get(
                    f"/variations/{e['variation_id']}/quantity",
                    params={"marketplace_id": 1, "refresh": "true"},
                )
                body = response.json() if response.status_code == 200 else {}
                reads.append(
                    {
                        "variation_id": e["variation_id"],
                        "at_s": at - started,
                        "seconds": time.perf_counter() - at,
                        "status": response.status_code,
                        "right": body.get("quantity") == e["quantity"],
                    }
                )
            in_sync = (await run_of(http, run_id))["status"] == "running"
            run = await finished(http, run_id)
            sync_s = time.perf_counter() - started
            stats = (await sim.get("/_sim/stats")).json()
            latencies = [r["seconds"] for r in reads]
            result["sync1"] = {
                "wall_s": sync_s,
                "status": run["status"],
                "api_calls": run["api_calls"],
                "pages": run["pages_fetched"],
                "updated": run["updated"],
                "duration_s": run["duration_seconds"],
                "sim_status_429": stats.get("status_429"),
                "sim_requests": stats.get("total_requests"),
                "sim_by_endpoint": stats.get("by_endpoint"),
            }
            result["live"] = {
                "reads": len(reads),
                "reads_while_sync_running": in_sync,
                "wrong": sum(not r["right"] or r["status"] != 200 for r in reads),
                "p50_s": percentile(latencies, 0.5),
                "p95_s": percentile(latencies, 0.95),
                "max_s": max(latencies),
                "min_s": min(latencies),
                "raw": reads,
            }
            print(json.dumps({"sync1": result["sync1"], "live": result["live"]}, indent=1))

            # 2. Sales: orders now, database watched for `quiet_window` s, then a bulk sync.
            sales = []
            for e in to_sell:
                before = await listed(engine, e["variation_id"])
                order = await sim.post(f"/_sim/listings/{e['uuid']}/orders", json={"units": 1})
                order.raise_for_status()
                sales.append(
                    {
                        "variation_id": e["variation_id"],
                        "page": (e["variation_id"] - 1) // 50 + 1,
                        "db_before": before,
                        "expected": int(order.json()["quantity"]),
                        "sold_at": time.perf_counter(),
                        "seen_s": None,
                    }
                )
            quiet_until = sales[-1]["sold_at"] + args.quiet_window
            changed_early = set()
            while time.perf_counter() < quiet_until:
                for s in sales:
                    if await listed(engine, s["variation_id"]) != s["db_before"]:
                        changed_early.add(s["variation_id"])
                await asyncio.sleep(0.5)
            after_quiet = {
                s["variation_id"]: await listed(engine, s["variation_id"]) for s in sales
            }
            sync2_started = time.perf_counter()
            run2_id = await start_sync(http)
            while any(s["seen_s"] is None for s in sales):
                for s in sales:
                    if (
                        s["seen_s"] is None
                        and await listed(engine, s["variation_id"]) == s["expected"]
                    ):
                        now = time.perf_counter()
                        s["seen_s"] = now - s["sold_at"]
                        s["seen_after_sync2_start_s"] = now - sync2_started
                if time.perf_counter() - sync2_started > 900:
                    break
                await asyncio.sleep(0.05)
            run2 = await finished(http, run2_id)
            for s in sales:
                s["db_after_quiet_window"] = after_quiet[s["variation_id"]]
                s["sold_at"] = s["sold_at"] - started
            result["sales"] = {
                "quiet_window_s": args.quiet_window,
                "changed_in_quiet_window": sorted(changed_early),
                "sync2_wall_s": time.perf_counter() - sync2_started,
                "sync2_status": run2["status"],
                "sync2_api_calls": run2["api_calls"],
                "raw": sales,
            }
            print(json.dumps({"sales": result["sales"]}, indent=1))
    finally:
        stop(service)
        stop(simulator)
        await engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--listings", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--reads", type=int, default=15)
    parser.add_argument("--reads-after", type=float, default=20.0)
    parser.add_argument("--quiet-window", type=float, default=60.0)
    parser.add_argument("--logs", default="/tmp/s7_before_logs")
    parser.add_argument("--json", default="/tmp/s7_before.json")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
