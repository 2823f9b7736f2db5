"""What a bulk sync run is asked to do: the one value the API, the CLI and the schedule build."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import FIRST_MARKETPLACE_ID
from app.models import RunTrigger


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Which marketplace, who asked (recorded on the run), and how much the run may do.

    `dry_run` reads and matches everything and writes no stock; `import_unknown` creates a
    variation for each listing that matches none.
    """

    marketplace_id: int = FIRST_MARKETPLACE_ID
    trigger: RunTrigger = RunTrigger.API
    dry_run: bool = False
    import_unknown: bool = False
