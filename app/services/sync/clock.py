"""The database clock a run's snapshot cutoffs are written in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import database_now

# Subtracted from each page's fetch time (on top of the clock-offset uncertainty): a row changed
# this close before the page was requested is treated as newer than the page. Skipping is safe
# (the next run picks the row up); overwriting a newer value is not. It also absorbs clock drift
# between this host and the database during a long run.
SNAPSHOT_SAFETY_MARGIN = timedelta(milliseconds=500)


@dataclass(frozen=True, slots=True)
class SnapshotClock:
    """Turns a page's local fetch time into a "not changed since" cutoff in the database clock."""

    offset: timedelta
    margin: timedelta

    def cutoff(self, fetched_at: datetime) -> datetime:
        local = fetched_at.astimezone(UTC).replace(tzinfo=None) if fetched_at.tzinfo else fetched_at
        return local + self.offset - self.margin


async def measure_snapshot_clock(
    engine: AsyncEngine, *, margin: timedelta = SNAPSHOT_SAFETY_MARGIN, samples: int = 3
) -> SnapshotClock:
    """database clock - local clock, from the quickest of a few round trips.

    The offset is known to within half a round trip; the whole round trip is added to the
    margin, so the cutoff only ever errs early (towards skipping).
    """
    best: tuple[timedelta, timedelta] | None = None
    async with engine.connect() as conn:
        for _ in range(samples):
            before = datetime.now(UTC).replace(tzinfo=None)
            database = await database_now(conn)
            after = datetime.now(UTC).replace(tzinfo=None)
            round_trip = after - before
            offset = database - (before + round_trip / 2)
            if best is None or round_trip < best[1]:
                best = (offset, round_trip)
        await conn.rollback()
    assert best is not None
    return SnapshotClock(offset=best[0], margin=margin + best[1])
