"""The long-lived parts every use case works with, handed down as one typed value."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services.locks import NamedLocks
from app.services.marketplace import MarketplaceRegistry


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """Settings, the database engine, the configured marketplaces and the named locks.

    Built once per process by `app.wiring`; use cases take it as their first argument, so a
    test builds one from fakes without patching anything.
    """

    settings: Settings
    engine: AsyncEngine
    # Every configured marketplace's adapter by id; a use case takes the one it is asked for.
    marketplaces: MarketplaceRegistry
    locks: NamedLocks
