"""Runs in the background of the app: started as tasks it owns, interrupted at shutdown."""

from __future__ import annotations

import asyncio
import logging

from app.errors import Conflict, InvalidRequest
from app.services.context import ServiceContext
from app.services.sync.options import SyncOptions
from app.services.sync.run import check_syncable, run_bulk_sync
from app.services.sync.runs import Run

log = logging.getLogger(__name__)


class BulkSyncRunner:
    """Starts runs as tasks owned by the app, so a request can answer 202 and return.

    `start` returns once the run holds its lock and has its row (a second trigger right after
    then gets 409), or raises what stopped it from starting. `shutdown` cancels the runs still
    going; each records itself as `failed` before it ends.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._tasks: set[asyncio.Task[Run]] = set()

    @property
    def active(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    async def start(self, options: SyncOptions) -> tuple[Run, asyncio.Task[Run]]:
        await check_syncable(
            self.ctx, marketplace_id=options.marketplace_id, import_unknown=options.import_unknown
        )
        started: asyncio.Future[Run] = asyncio.get_running_loop().create_future()

        def on_started(run: Run) -> None:
            if not started.done():
                started.set_result(run)

        task = asyncio.create_task(
            run_bulk_sync(self.ctx, options, on_started=on_started),
            name=f"bulk-sync-marketplace-{options.marketplace_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            return started.result(), task
        # It ended before it started: Conflict, InvalidRequest or a database error.
        task.result()
        raise AssertionError("a bulk sync ended without starting and without an error")

    async def run(self, options: SyncOptions) -> Run:
        """Start a run and wait for its end; a caller that gives up does not stop the run."""
        _, task = await self.start(options)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Run]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, Conflict | InvalidRequest):
            log.error("bulk sync task failed before recording its run", exc_info=error)

    async def shutdown(self) -> None:
        """Cancel the runs still going and wait until each has recorded itself as failed."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            log.warning("shutdown: interrupting %d bulk sync run(s)", len(tasks))
            # Not `gather`: a cancellation of this shutdown must not cancel the runs a second
            # time (on SQLite that can leave a connection's close waiting forever).
            await asyncio.wait(tasks)
