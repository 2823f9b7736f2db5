"""The run record of a bulk sync (`stock_sync_logs`): creating, saving, closing and reading it.

A run is one row, rewritten as the run goes so that `GET /sync/runs/{id}` shows live
progress. The service's own columns hold the `Run` fields; the seed application's columns
(`total_records`, `synced_count`, `skipped_count`, `error_count`, `error_details`,
`summary`, `completed_at`) are filled from them so its screens keep working.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import reading
from app.errors import NotFound
from app.models import RunStatus, RunTrigger, StockSyncLog, as_utc, table_of, utcnow
from app.services.stock import StockDifference

runs_table = table_of(StockSyncLog)

# Past this many entries `errors` keeps a count instead: a feed with thousands of failed
# pages must not turn the run record into megabytes.
MAX_RECORDED_ERRORS = 50


# The run's fields each batch adds to (`BatchOutcome.add_to`), saved with the batch's writes.
BATCH_COUNTERS = (
    "matched",
    "unknown_listings",
    "imported",
    "updated",
    "unchanged",
    "skipped_newer",
    "ambiguous_sku",
    "variations_resummed",
)

# Examples a run's drift keeps, largest difference first.
DRIFT_EXAMPLES = 20


class DriftExample(BaseModel):
    variation_id: int
    stored: int
    live: int
    confirmed_at: datetime | None = None


class Drift(BaseModel):
    """Of the rows a run wrote, those the database held at another value than the marketplace
    showed. `higher`: the database showed more (the overselling side); `units`: the sum of the
    absolute differences; `oldest_confirmed_at`: the oldest last confirmation among them."""

    rows: int = 0
    higher: int = 0
    lower: int = 0
    units: int = 0
    oldest_confirmed_at: datetime | None = None
    examples: list[DriftExample] = Field(default_factory=list)

    def add(self, differences: Iterable[StockDifference]) -> None:
        examples = list(self.examples)
        for difference in differences:
            self.rows += 1
            if difference.stored > difference.live:
                self.higher += 1
            else:
                self.lower += 1
            self.units += abs(difference.stored - difference.live)
            confirmed_at = as_utc(difference.confirmed_at)
            if confirmed_at is not None and (
                self.oldest_confirmed_at is None or confirmed_at < self.oldest_confirmed_at
            ):
                self.oldest_confirmed_at = confirmed_at
            examples.append(
                DriftExample(
                    variation_id=difference.variation_id,
                    stored=difference.stored,
                    live=difference.live,
                    confirmed_at=confirmed_at,
                )
            )
        self.examples = _largest(examples)

    def merge(self, other: Drift) -> None:
        self.rows += other.rows
        self.higher += other.higher
        self.lower += other.lower
        self.units += other.units
        if other.oldest_confirmed_at is not None and (
            self.oldest_confirmed_at is None or other.oldest_confirmed_at < self.oldest_confirmed_at
        ):
            self.oldest_confirmed_at = other.oldest_confirmed_at
        self.examples = _largest([*self.examples, *other.examples])


def _largest(examples: list[DriftExample]) -> list[DriftExample]:
    return heapq.nsmallest(
        DRIFT_EXAMPLES, examples, key=lambda e: (-abs(e.stored - e.live), e.variation_id)
    )


class Run(BaseModel):
    """One bulk sync run, as the API, the CLI and the scheduler report it."""

    id: int
    marketplace_id: int
    trigger: str
    status: str
    dry_run: bool = False
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    api_calls: int = 0
    pages_fetched: int = 0
    pages_expected: int = 0
    listings_seen: int = 0
    matched: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_newer: int = 0
    not_found: int = 0
    unknown_listings: int = 0
    imported: int = 0
    # Distinct SKUs the run found on two or more variations (marketplaces matched by SKU).
    ambiguous_sku: int = 0
    variations_resummed: int = 0
    drift: Drift = Field(default_factory=Drift)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    markets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    summary: str | None = None

    def add_error(self, entry: dict[str, Any]) -> None:
        """Record a problem; beyond MAX_RECORDED_ERRORS only the number of further ones is kept."""
        if len(self.errors) < MAX_RECORDED_ERRORS:
            self.errors.append(entry)
            return
        if len(self.errors) == MAX_RECORDED_ERRORS:
            self.errors.append({"kind": "more_errors", "count": 0, "message": ""})
        overflow = self.errors[-1]
        overflow["count"] += 1
        overflow["message"] = f"{overflow['count']} more problems not listed"


def process_owner() -> str:
    """Who runs a run: host and pid, so a run left `running` can be traced to its process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _columns(run: Run) -> dict[str, Any]:
    """The row for a run: its own fields plus the seed application's columns derived from them."""
    return {
        "status": run.status,
        "dry_run": run.dry_run,
        "completed_at": _naive(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "api_calls": run.api_calls,
        "pages_fetched": run.pages_fetched,
        "pages_expected": run.pages_expected,
        "listings_seen": run.listings_seen,
        "matched": run.matched,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "skipped_newer": run.skipped_newer,
        "not_found": run.not_found,
        "unknown_listings": run.unknown_listings,
        "imported": run.imported,
        "ambiguous_sku": run.ambiguous_sku,
        "variations_resummed": run.variations_resummed,
        "drift": run.drift.model_dump_json(),
        "markets": json.dumps(run.markets, sort_keys=True),
        "error_details": json.dumps(run.errors) if run.errors else None,
        "summary": run.summary,
        "total_records": run.listings_seen,
        "synced_count": run.updated,
        "skipped_count": run.unchanged + run.skipped_newer,
        "error_count": len(run.errors),
        "updated_at": utcnow(),
    }


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=None)


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        # A row written by the seed application may hold free text here.
        return default


def _errors_from(text: str | None) -> list[dict[str, Any]]:
    loaded = _loads(text, [])
    if isinstance(loaded, dict):
        loaded = [loaded]
    if not isinstance(loaded, list):
        return [{"kind": "error", "message": str(loaded)}]
    return [
        entry if isinstance(entry, dict) else {"kind": "error", "message": str(entry)}
        for entry in loaded
    ]


def _drift_from(text: str | None) -> Drift:
    loaded = _loads(text, {})
    try:
        return Drift.model_validate(loaded)
    except ValueError:
        return Drift()


def run_from_row(row: Any) -> Run:
    markets = _loads(row["markets"], {})
    return Run(
        id=row["id"],
        marketplace_id=row["marketplace_id"],
        trigger=row["trigger"],
        status=row["status"],
        dry_run=bool(row["dry_run"]),
        started_at=as_utc(row["started_at"]) or utcnow(),
        finished_at=as_utc(row["completed_at"]),
        duration_seconds=row["duration_seconds"],
        api_calls=row["api_calls"],
        pages_fetched=row["pages_fetched"],
        pages_expected=row["pages_expected"],
        listings_seen=row["listings_seen"],
        matched=row["matched"],
        updated=row["updated"],
        unchanged=row["unchanged"],
        skipped_newer=row["skipped_newer"],
        not_found=row["not_found"],
        unknown_listings=row["unknown_listings"],
        imported=row["imported"],
        ambiguous_sku=row["ambiguous_sku"],
        variations_resummed=row["variations_resummed"],
        drift=_drift_from(row["drift"]),
        errors=_errors_from(row["error_details"]),
        markets=markets if isinstance(markets, dict) else {},
        summary=row["summary"],
    )


async def create_run(
    conn: AsyncConnection,
    *,
    marketplace_id: int,
    trigger: RunTrigger,
    dry_run: bool,
    markets: list[str],
) -> Run:
    """Insert the `running` row of a new run; the caller holds the marketplace's bulk lock."""
    started_at = utcnow()
    run = Run(
        id=0,
        marketplace_id=marketplace_id,
        trigger=trigger.value,
        status=RunStatus.RUNNING.value,
        dry_run=dry_run,
        started_at=as_utc(started_at) or started_at,
        markets={
            market: {"status": "pending", "pages": 0, "listings": 0, "count": None}
            for market in markets
        },
        summary="running",
    )
    values = _columns(run) | {
        "marketplace_id": marketplace_id,
        "trigger": trigger.value,
        "started_at": started_at,
        "owner": process_owner(),
        "created_at": started_at,
    }
    result = await conn.execute(sa.insert(runs_table).values(values))
    run.id = int(result.inserted_primary_key[0])  # type: ignore[index]
    return run


async def save_run(conn: AsyncConnection, *, run: Run) -> None:
    """Write the run's current counters, markets, errors and status."""
    await conn.execute(sa.update(runs_table).where(runs_table.c.id == run.id).values(_columns(run)))


async def get_run(engine: AsyncEngine, *, run_id: int) -> Run:
    async with reading(engine) as conn:
        row = (
            (await conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id)))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"sync run {run_id} not found")
    return run_from_row(row)


async def list_runs(engine: AsyncEngine, *, marketplace_id: int | None, limit: int) -> list[Run]:
    """Newest first (by id: the seed's whole-second start times do not order runs of one second)."""
    query = sa.select(runs_table).order_by(runs_table.c.id.desc()).limit(limit)
    if marketplace_id is not None:
        query = query.where(runs_table.c.marketplace_id == marketplace_id)
    async with reading(engine) as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [run_from_row(row) for row in rows]


async def latest_start(
    engine: AsyncEngine, *, marketplace_id: int, trigger: RunTrigger
) -> datetime | None:
    """When the newest run of that trigger started (naive UTC), or None."""
    async with reading(engine) as conn:
        started: datetime | None = (
            await conn.execute(
                sa.select(sa.func.max(runs_table.c.started_at)).where(
                    runs_table.c.marketplace_id == marketplace_id,
                    runs_table.c.trigger == trigger.value,
                )
            )
        ).scalar()
    return started


async def running_run_ids(
    conn: AsyncConnection, *, marketplace_id: int
) -> list[tuple[int, str | None]]:
    """(id, owner) of the marketplace's runs marked `running`, newest first.

    Only this service's runs (they name their owner process); `running` rows the seed
    application wrote itself are its own business and are never closed from here.
    """
    rows = await conn.execute(
        sa.select(runs_table.c.id, runs_table.c.owner)
        .where(
            runs_table.c.marketplace_id == marketplace_id,
            runs_table.c.status == RunStatus.RUNNING.value,
            runs_table.c.owner.is_not(None),
        )
        .order_by(runs_table.c.id.desc())
    )
    return [(row.id, row.owner) for row in rows]


async def marketplaces_with_running_runs(engine: AsyncEngine) -> list[int]:
    async with reading(engine) as conn:
        rows = await conn.execute(
            sa.select(runs_table.c.marketplace_id)
            .where(runs_table.c.status == RunStatus.RUNNING.value, runs_table.c.owner.is_not(None))
            .distinct()
        )
        return sorted(int(marketplace_id) for marketplace_id in rows.scalars())


async def fail_runs(conn: AsyncConnection, *, run_ids: list[int], reason: str) -> None:
    """Close runs whose process is gone as `failed`; their counters stay as last saved."""
    if not run_ids:
        return
    rows = (
        (
            await conn.execute(
                sa.select(runs_table).where(
                    runs_table.c.id.in_(run_ids), runs_table.c.status == RunStatus.RUNNING.value
                )
            )
        )
        .mappings()
        .all()
    )
    for row in rows:
        run = run_from_row(row)
        run.status = RunStatus.FAILED.value
        run.finished_at = as_utc(utcnow())
        run.summary = f"failed: {reason}"
        run.add_error({"kind": "abandoned", "message": reason})
        for market in run.markets.values():
            if market.get("status") in ("pending", "running"):
                market["status"] = "failed"
        await save_run(conn, run=run)
