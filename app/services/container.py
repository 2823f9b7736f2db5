"""What a process opens once and every request, run or command shares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_engine
from app.migrate import run_migrations
from app.services.backmarket import BackMarketClient
from app.services.locks import NamedLocks


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    backmarket: BackMarketClient
    locks: NamedLocks
    # Filled by the background parts (scheduler, sync runner) when they start.
    extras: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    backmarket_http: httpx.AsyncClient | None = None,
    migrate: bool | None = None,
) -> AsyncIterator[Services]:
    """The engine (migrated unless told not to), the Back Market client and the locks; closed after."""
    engine = create_engine(settings)
    try:
        if settings.run_migrations_on_startup if migrate is None else migrate:
            await run_migrations(engine)
        backmarket = BackMarketClient(settings, http=backmarket_http)
        try:
            yield Services(
                settings=settings, engine=engine, backmarket=backmarket, locks=NamedLocks(engine)
            )
        finally:
            await backmarket.aclose()
    finally:
        await engine.dispose()
