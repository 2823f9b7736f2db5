"""Whether a marketplace exists in the database: the one rule, the one message.

Whether it can be reached live is the registry's to say (`MarketplaceRegistry.get`)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import InvalidRequest
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
