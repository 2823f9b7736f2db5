"""What the app's lifespan opens once per process and every request shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services.locks import NamedLocks

if TYPE_CHECKING:
    from app.services.backmarket import BackMarketClient


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    backmarket: BackMarketClient
    locks: NamedLocks
    # Filled by the background parts (scheduler, sync runner) when they start.
    extras: dict[str, Any] = field(default_factory=dict)
