"""What a bulk sync run is asked to do: the one value the API, the CLI and the schedule build."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.config import FIRST_MARKETPLACE_ID
from app.models import RunTrigger


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Which marketplace, who asked (recorded on the run), and how much the run may do.

    `dry_run` reads and matches everything and writes no stock; `import_unknown` creates a
    variation for each listing that matches none. `unless_started_since` (the schedule's): the
    run does not start when a run of the same trigger started at or after that moment (naive
    UTC), checked once the lock is held, so a scheduler that waited for the lock of its slot's
    finished run does not run the slot again.
    """

    marketplace_id: int = FIRST_MARKETPLACE_ID
    trigger: RunTrigger = RunTrigger.API
    dry_run: bool = False
    import_unknown: bool = False
    unless_started_since: datetime | None = None
