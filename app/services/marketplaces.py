"""Whether a marketplace exists in the database: the one rule, the one message.

Whether it can be reached live is the registry's to say (`MarketplaceRegistry.get`)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import reading
from app.errors import Conflict, InvalidRequest
from app.models import Marketplace, table_of

marketplace_table = table_of(Marketplace)


def check_marketplace(name: str | None, marketplace_id: int) -> None:
    """InvalidRequest (422) when the marketplace does not exist (`name` is its row's name)."""
    if name is None:
        raise InvalidRequest(f"marketplace {marketplace_id} does not exist")


async def marketplace_name(conn: AsyncConnection, marketplace_id: int) -> str | None:
    return (
        await conn.execute(
            sa.select(marketplace_table.c.name).where(marketplace_table.c.id == marketplace_id)
        )
    ).scalar_one_or_none()


class SyncDisabled(Conflict):
    """A bulk sync asked of a marketplace whose `sync_enabled` is 0 (409, `sync_disabled`)."""

    def __init__(self, marketplace_id: int) -> None:
        super().__init__(
            f"bulk sync of marketplace {marketplace_id} is turned off "
            "(marketplace.sync_enabled = 0); refresh and add-quantity still work",
            reason="sync_disabled",
        )


async def sync_enabled(conn: AsyncConnection, marketplace_id: int) -> bool:
    """`marketplace.sync_enabled`, read now so a change takes effect without a restart; a
    marketplace without a row counts as enabled (its live work is refused for that instead)."""
    enabled = (
        await conn.execute(
            sa.select(marketplace_table.c.sync_enabled).where(
                marketplace_table.c.id == marketplace_id
            )
        )
    ).scalar_one_or_none()
    return enabled is None or bool(enabled)


async def read_sync_enabled(engine: AsyncEngine, marketplace_id: int) -> bool:
    async with reading(engine) as conn:
        return await sync_enabled(conn, marketplace_id)
