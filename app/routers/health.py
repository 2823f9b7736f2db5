"""Liveness and readiness; open to everyone, even when API keys are set."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.db import ping
from app.deps import ContainerDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "the database is unreachable (`database` says why)"}},
)
async def readyz(container: ContainerDep) -> JSONResponse:
    body: dict[str, Any] = {
        "status": "ok",
        "database": "ok",
        "schedule": container.scheduler.info(),
    }
    try:
        await ping(container.ctx.engine)
    except Exception as exc:  # any driver error means "not ready"; the reason is reported
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        body.update(status="unavailable", database=f"unreachable: {type(exc).__name__}: {reason}")
        return JSONResponse(status_code=503, content=body)
    return JSONResponse(content=body)
