"""What the status page (`GET /`) shows, gathered from the services that own each part: per
configured marketplace its running run and last run (`sync.runs`), its schedule, its orders
watcher, its adapter's request budget and its listing-update budget; the recent runs of every
marketplace; and, when asked, one variation's stock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from app.models import RunStatus
from app.services.context import ServiceContext
from app.services.marketplace import BudgetSnapshot, CallKind, Marketplace
from app.services.orders import OrdersWatcher, WatcherStatus
from app.services.quantity.update_budget import BudgetStatus, budget_status
from app.services.sync import runs
from app.services.sync.runs import Run
from app.services.variation_stock import VariationStock, read_variation_stock

RECENT_RUNS = 10
# The watcher is late when its last successful poll is older than this many intervals (the
# README's alert threshold).
LATE_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class RunProgress:
    """The running run's pace: pages per second since its start, and the time left at that pace."""

    run: Run
    elapsed_seconds: float
    pages_per_second: float | None
    eta_seconds: float | None


@dataclass(frozen=True, slots=True)
class CallKindUse:
    """One kind of Back Market call: waiting for a send slot now, and since the process started
    the requests granted and their mean wait for a slot."""

    kind: str
    waiting: int
    granted: int
    mean_wait_seconds: float | None


@dataclass(frozen=True, slots=True)
class MarketplaceStatus:
    """One configured marketplace: its running sync, last finished run, schedule, watcher and
    budgets."""

    marketplace_id: int
    name: str
    kind: str
    sync_enabled: bool
    running: RunProgress | None
    last_run: Run | None
    schedule: dict[str, Any]
    watcher: WatcherStatus
    watcher_late: bool
    request_budget: BudgetSnapshot
    request_budget_by_kind: list[CallKindUse]
    request_budget_paused_seconds: float
    update_budget: BudgetStatus


@dataclass(frozen=True, slots=True)
class StatusPage:
    marketplaces: list[MarketplaceStatus]
    runs: list[Run]
    variation: VariationStock | None

    @property
    def syncing(self) -> bool:
        return any(marketplace.running is not None for marketplace in self.marketplaces)


async def read_status_page(
    ctx: ServiceContext,
    *,
    watchers: Mapping[int, OrdersWatcher],
    schedules: Mapping[int, dict[str, Any]],
    variation_id: int | None = None,
    now: datetime | None = None,
) -> StatusPage:
    """Every configured marketplace (by id), the recent runs of all of them, and the variation
    asked for."""
    now = now or datetime.now(UTC)
    return StatusPage(
        marketplaces=[
            await _marketplace_status(
                ctx,
                marketplace,
                watcher=watchers[marketplace.id],
                schedule=schedules[marketplace.id],
                now=now,
            )
            for marketplace in ctx.marketplaces
        ],
        runs=await runs.list_runs(ctx.engine, marketplace_id=None, limit=RECENT_RUNS),
        variation=None
        if variation_id is None
        else await read_variation_stock(ctx.engine, variation_id=variation_id),
    )


async def _marketplace_status(
    ctx: ServiceContext,
    marketplace: Marketplace,
    *,
    watcher: OrdersWatcher,
    schedule: dict[str, Any],
    now: datetime,
) -> MarketplaceStatus:
    # One run of a marketplace at a time: the newest two hold the running one and the last ended.
    newest = await runs.list_runs(ctx.engine, marketplace_id=marketplace.id, limit=2)
    watcher_status = await watcher.status()
    snapshot = marketplace.budget_snapshot()
    return MarketplaceStatus(
        marketplace_id=marketplace.id,
        name=marketplace.name,
        kind=marketplace.kind,
        sync_enabled=watcher_status.sync_enabled,
        running=_progress(newest, now=now),
        last_run=next((run for run in newest if run.status != RunStatus.RUNNING.value), None),
        schedule=schedule,
        watcher=watcher_status,
        watcher_late=_watcher_late(watcher_status),
        request_budget=snapshot,
        request_budget_by_kind=_use_by_kind(snapshot, marketplace_id=marketplace.id),
        request_budget_paused_seconds=marketplace.paused_for(),
        update_budget=await budget_status(
            ctx.engine, marketplace_id=marketplace.id, limit=marketplace.updates_per_hour
        ),
    )


def _progress(recent: list[Run], *, now: datetime) -> RunProgress | None:
    running = next((run for run in recent if run.status == RunStatus.RUNNING.value), None)
    if running is None:
        return None
    elapsed = max(0.0, (now - running.started_at).total_seconds())
    rate = running.pages_fetched / elapsed if elapsed > 0 and running.pages_fetched else None
    left = running.pages_expected - running.pages_fetched
    eta = left / rate if rate and running.pages_expected and left >= 0 else None
    return RunProgress(run=running, elapsed_seconds=elapsed, pages_per_second=rate, eta_seconds=eta)


def _watcher_late(status: WatcherStatus) -> bool:
    # Enabled, the lag is always known: since the last success, or since the watcher started.
    return (
        status.enabled
        and status.lag_seconds is not None
        and status.lag_seconds > LATE_AFTER_INTERVALS * status.interval_seconds
    )


def _use_by_kind(snapshot: BudgetSnapshot, *, marketplace_id: int) -> list[CallKindUse]:
    """Waiters from the snapshot; granted requests and their waits from the budget's own
    histogram (`backmarket_budget_wait_seconds`, this marketplace's), this process's since it
    started."""
    uses = []
    for kind in CallKind:
        labels = {"kind": kind.label, "marketplace_id": str(marketplace_id)}
        granted = REGISTRY.get_sample_value("backmarket_budget_wait_seconds_count", labels) or 0
        waited = REGISTRY.get_sample_value("backmarket_budget_wait_seconds_sum", labels) or 0.0
        uses.append(
            CallKindUse(
                kind=kind.label,
                waiting=snapshot["waiting"].get(kind.label, 0),
                granted=int(granted),
                mean_wait_seconds=waited / granted if granted else None,
            )
        )
    return uses
