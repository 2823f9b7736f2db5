"""Prometheus metrics: every metric the service's modules define, in the text format.

The metrics are defined beside the work they count (`backmarket/budget.py`, `sync/intake.py`,
`sync/record.py`, `orders/watcher.py`…); the README's "Metrics" table lists them all. Gauges
that are a time since something are brought up to date here, at scrape time.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ContainerDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(container: ContainerDep) -> Response:
    for watcher in container.watchers.values():
        await watcher.update_lag_metric()
    return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)
