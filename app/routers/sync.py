"""Bulk sync endpoints: start a run, read runs, read the schedule."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from app.config import FIRST_MARKETPLACE_ID
from app.deps import ContainerDep, require_json_body
from app.errors import error_responses
from app.http_limits import INT_MAX, MAX_BODY_BYTES, MarketplaceId, RunId
from app.models import RunTrigger
from app.services.orders import MarketplaceWatcherStatus, OrdersWatchersStatus
from app.services.sync import Run, SyncOptions, runs

router = APIRouter(prefix="/sync", tags=["sync"])


class BulkSyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    marketplace_id: MarketplaceId = FIRST_MARKETPLACE_ID
    dry_run: bool = False
    import_unknown: bool = False


class RunEnvelope(BaseModel):
    run: Run


class RunList(BaseModel):
    runs: list[Run]


@router.post(
    "/bulk",
    status_code=202,
    dependencies=[Depends(require_json_body)],
    response_model=RunEnvelope,
    responses={
        200: {"model": RunEnvelope, "description": "with wait=true: the finished run"},
        **error_responses(
            {
                409: "a bulk sync of that marketplace is already running (`run_id`)",
                413: f"a body larger than {MAX_BODY_BYTES} bytes",
                422: "a body that is not UTF-8 JSON of this shape (`marketplace_id` in "
                f"1..{INT_MAX}), or a marketplace without Back Market",
            }
        ),
    },
)
async def start_bulk_sync(
    container: ContainerDep,
    body: Annotated[BulkSyncRequest | None, Body()] = None,
    wait: Annotated[bool, Query(description="answer when the run has finished")] = False,
) -> JSONResponse:
    """Start a bulk sync: 202 with the run as started, or 200 with the finished run (`wait`)."""
    request = body or BulkSyncRequest()
    options = SyncOptions(
        marketplace_id=request.marketplace_id,
        trigger=RunTrigger.API,
        dry_run=request.dry_run,
        import_unknown=request.import_unknown,
    )
    if wait:
        finished = await container.runner.run(options)
        return JSONResponse(status_code=200, content={"run": finished.model_dump(mode="json")})
    started, _task = await container.runner.start(options)
    return JSONResponse(status_code=202, content={"run": started.model_dump(mode="json")})


@router.get(
    "/runs",
    response_model=RunList,
    responses=error_responses({422: "`marketplace_id` or `limit` out of range"}),
)
async def list_runs(
    container: ContainerDep,
    marketplace_id: MarketplaceId | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> RunList:
    """Runs, newest first."""
    found = await runs.list_runs(container.ctx.engine, marketplace_id=marketplace_id, limit=limit)
    return RunList(runs=found)


@router.get(
    "/runs/{run_id}",
    response_model=RunEnvelope,
    responses=error_responses({404: "no such run", 422: "`run_id` out of range"}),
)
async def get_run(
    container: ContainerDep, run_id: Annotated[RunId, Path(examples=[1])]
) -> RunEnvelope:
    """One run; while it is running, its progress so far."""
    return RunEnvelope(run=await runs.get_run(container.ctx.engine, run_id=run_id))


@router.get("/schedule")
async def get_schedule(container: ContainerDep) -> dict[str, Any]:
    """The scheduled bulk sync: enabled, interval and next run time (UTC)."""
    return container.scheduler.info()


@router.get("/orders", response_model=OrdersWatchersStatus)
async def get_orders_watcher(container: ContainerDep) -> OrdersWatchersStatus:
    """The orders watchers: enabled, interval, watermark and last poll (calls, orders, listings
    refreshed, error) of marketplace 1 at the top level, and of every configured marketplace
    in `watchers`."""
    watchers = [
        MarketplaceWatcherStatus(
            marketplace_id=marketplace_id, **(await watcher.status()).model_dump()
        )
        for marketplace_id, watcher in sorted(container.watchers.items())
    ]
    first = next(entry for entry in watchers if entry.marketplace_id == FIRST_MARKETPLACE_ID)
    return OrdersWatchersStatus(**first.model_dump(exclude={"marketplace_id"}), watchers=watchers)
