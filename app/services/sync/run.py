"""The bulk stock sync: read every listing of each configured market, write the stock it holds.

How a run goes: the marketplace's lock is taken (`stale`: a second trigger gets Conflict, 409,
naming the running run), the run is recorded, the database clock is measured (`clock`), the
markets' pages are read into batches (`intake`), each batch is matched and written by the one
writer (`batch`, `matching`), and the end is recorded (`record`). Memory holds a batch, a few
queued pages and one bit per matched variation id.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, aclosing
from datetime import timedelta

from app.config import FIRST_MARKETPLACE_ID
from app.db import describe_error, transaction
from app.errors import Conflict, InvalidRequest
from app.logs import log_context
from app.services.context import ServiceContext
from app.services.locks import HeldLock, LockLost
from app.services.marketplace import Marketplace
from app.services.marketplaces import (
    SyncDisabled,
    check_marketplace,
    marketplace_name,
    sync_enabled,
)
from app.services.sync import runs
from app.services.sync.batch import BatchWriter
from app.services.sync.clock import SNAPSHOT_SAFETY_MARGIN, measure_snapshot_clock
from app.services.sync.intake import (
    QUEUE_DEPTH,
    QUEUE_PAGES,
    PageIntake,
    PageQueue,
    fetch_market,
)
from app.services.sync.options import SyncOptions
from app.services.sync.record import ProgressCallback, RunRecorder, RunState
from app.services.sync.runs import Run
from app.services.sync.stale import close_dead_runs, take_bulk_lock

log = logging.getLogger(__name__)


async def check_syncable(
    ctx: ServiceContext, *, marketplace_id: int, import_unknown: bool = False
) -> Marketplace:
    """The marketplace's adapter; InvalidRequest (422) unless the marketplace exists and is
    configured, and for `import_unknown` on a marketplace other than 1; SyncDisabled (409)
    when its `sync_enabled` is 0."""
    if import_unknown and marketplace_id != FIRST_MARKETPLACE_ID:
        # An imported variation takes marketplace 1's listing fields (reference, SKU, state),
        # which only marketplace 1's feed may write.
        raise InvalidRequest(
            f"import_unknown is for marketplace {FIRST_MARKETPLACE_ID} only: marketplace "
            f"{marketplace_id} matches existing variations by SKU and creates none"
        )
    async with ctx.engine.connect() as conn:
        name = await marketplace_name(conn, marketplace_id)
        check_marketplace(name, marketplace_id)
        adapter = ctx.marketplaces.get(marketplace_id)
        if not await sync_enabled(conn, marketplace_id):
            raise SyncDisabled(marketplace_id)
    return adapter


async def run_bulk_sync(
    ctx: ServiceContext,
    # Frozen, so the one default instance can be shared by every call.
    options: SyncOptions = SyncOptions(),  # noqa: B008
    *,
    progress: ProgressCallback | None = None,
    on_started: ProgressCallback | None = None,
    snapshot_margin: timedelta = SNAPSHOT_SAFETY_MARGIN,
) -> Run:
    """Take the marketplace's lock, record a run, sync, and return the finished run.

    Raises InvalidRequest for a marketplace without Back Market, Conflict when a run of the
    marketplace is going on in any process. Anything that goes wrong once the run is recorded
    ends in a `failed` run (returned, or, on cancellation, recorded and re-raised).
    `on_started` is called once the run row exists and the lock is held; `progress` after each
    batch and at the end. Both get a copy of the run.
    """
    marketplace_id = options.marketplace_id
    marketplace = await check_syncable(
        ctx, marketplace_id=marketplace_id, import_unknown=options.import_unknown
    )
    markets = list(marketplace.feeds)
    async with AsyncExitStack() as stack:
        held = await take_bulk_lock(ctx, stack, marketplace_id=marketplace_id)
        await _check_not_covered(ctx, options)
        async with transaction(ctx.engine) as conn:
            await close_dead_runs(conn, engine=ctx.engine, marketplace_id=marketplace_id)
            run = await runs.create_run(
                conn,
                marketplace_id=marketplace_id,
                trigger=options.trigger,
                dry_run=options.dry_run,
                markets=markets,
            )
        # Every line of the run, its page fetchers' included, carries its id.
        stack.enter_context(log_context(run_id=run.id))
        log.info(
            "bulk sync run %d started (%s, marketplace %d, markets %s%s)",
            run.id,
            options.trigger.value,
            marketplace_id,
            ",".join(markets),
            ", dry run" if options.dry_run else "",
            extra={
                "event": "bulk_sync_started",
                "trigger": options.trigger.value,
                "marketplace_id": marketplace_id,
                "markets": markets,
                "dry_run": options.dry_run,
            },
        )
        if on_started is not None:
            on_started(run.model_copy(deep=True))
        state = RunState(run=run, markets=markets, import_unknown=options.import_unknown)
        sync = _BulkSync(
            ctx,
            marketplace=marketplace,
            state=state,
            held=held,
            progress=progress,
            snapshot_margin=snapshot_margin,
        )
        return await sync.execute()
    raise AssertionError("unreachable")  # pragma: no cover - keeps mypy sure of the return


async def _check_not_covered(ctx: ServiceContext, options: SyncOptions) -> None:
    """Conflict (a skip for the schedule) when a run of the same trigger started since
    `options.unless_started_since`: it covered what this run was asked for."""
    if options.unless_started_since is None:
        return
    latest = await runs.latest_start(
        ctx.engine, marketplace_id=options.marketplace_id, trigger=options.trigger
    )
    if latest is not None and latest >= options.unless_started_since:
        raise Conflict(
            f"a {options.trigger.value} bulk sync of marketplace {options.marketplace_id} "
            f"already started at {latest:%Y-%m-%d %H:%M:%S} UTC",
            run_id=None,
        )


class _BulkSync:
    """One run from its start to its recorded end: many page fetchers, one writer."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        marketplace: Marketplace,
        state: RunState,
        held: HeldLock,
        progress: ProgressCallback | None,
        snapshot_margin: timedelta,
    ) -> None:
        self.ctx = ctx
        self.marketplace = marketplace
        self.state = state
        self.snapshot_margin = snapshot_margin
        self.recorder = RunRecorder(state, engine=ctx.engine, progress=progress)
        self.writer = BatchWriter(state, engine=ctx.engine, held=held, recorder=self.recorder)

    async def execute(self) -> Run:
        fetchers: list[asyncio.Task[None]] = []
        try:
            clock = await measure_snapshot_clock(self.ctx.engine, margin=self.snapshot_margin)
            intake = PageIntake(
                self.state.run,
                markets=self.state.markets,
                clock=clock,
                batch_size=self.ctx.settings.sync_batch_size,
            )
            queue: PageQueue = asyncio.Queue(maxsize=QUEUE_PAGES)
            fetchers = [
                asyncio.create_task(
                    fetch_market(self.marketplace, market, queue), name=f"bulk-sync-{market}"
                )
                for market in self.state.markets
            ]
            async with aclosing(intake.batches(queue)) as batches:
                async for batch in batches:
                    await self.writer.write(batch)
            await self.recorder.finish()
        except asyncio.CancelledError:
            await _stop_tasks(fetchers)
            await self.recorder.fail(
                {"kind": "interrupted", "message": "the run was interrupted (service shutdown)"},
                summary="interrupted by shutdown before it finished",
            )
            raise
        except LockLost:
            await _stop_tasks(fetchers)
            await self.recorder.fail(
                {
                    "kind": "lock_lost",
                    "message": "the database connection holding the bulk-sync lock was lost; "
                    "stopped so that two runs cannot overlap",
                },
                summary="stopped: lost the bulk-sync lock",
            )
        except Exception as exc:
            log.exception("bulk sync run %d crashed", self.state.run.id)
            await _stop_tasks(fetchers)
            await self.recorder.fail(
                {"kind": "crash", "message": describe_error(exc)},
                summary=f"crashed: {type(exc).__name__}",
            )
        finally:
            await _stop_tasks(fetchers)
            QUEUE_DEPTH.set(0)
        return self.state.run.model_copy(deep=True)


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
