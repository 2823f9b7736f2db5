"""The bulk stock sync: one run per marketplace, its records, the background runner, the schedule.

`run` is a run from start to end; `intake`, `batch`, `matching`, `clock` and `record` are its
parts; `stale` keeps one run per marketplace; `runs` reads and writes the run records;
`runner` starts runs in the background of the app; `schedule` starts them on the clock.
"""

from app.services.sync import runs
from app.services.sync.clock import SNAPSHOT_SAFETY_MARGIN, SnapshotClock, measure_snapshot_clock
from app.services.sync.matching import VariationIdSet
from app.services.sync.options import SyncOptions
from app.services.sync.record import ProgressCallback
from app.services.sync.run import check_syncable, run_bulk_sync
from app.services.sync.runner import BulkSyncRunner
from app.services.sync.runs import Run
from app.services.sync.schedule import JOB_ID, SCHEDULE_ANCHOR, SyncScheduler, run_scheduled_sync
from app.services.sync.stale import bulk_lock_name, close_stale_runs

__all__ = [
    "JOB_ID",
    "SCHEDULE_ANCHOR",
    "SNAPSHOT_SAFETY_MARGIN",
    "BulkSyncRunner",
    "ProgressCallback",
    "Run",
    "SnapshotClock",
    "SyncOptions",
    "SyncScheduler",
    "VariationIdSet",
    "bulk_lock_name",
    "check_syncable",
    "close_stale_runs",
    "measure_snapshot_clock",
    "run_bulk_sync",
    "run_scheduled_sync",
    "runs",
]
