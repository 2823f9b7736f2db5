"""The long-lived parts every use case works with, handed down as one typed value."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services.backmarket import BackMarketClient
from app.services.locks import NamedLocks


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """Settings, the database engine, the Back Market client and the named locks.

    Built once per process by `app.wiring`; use cases take it as their first argument, so a
    test builds one from fakes without patching anything.
    """

    settings: Settings
    engine: AsyncEngine
    backmarket: BackMarketClient
    locks: NamedLocks
