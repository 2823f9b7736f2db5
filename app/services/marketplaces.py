"""Which marketplace this service can reach live: the one rule, the one message."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import InvalidRequest
from app.models import Marketplace, table_of

# The only marketplace with a Back Market client; others are answered from the database only.
BACKMARKET_MARKETPLACE_ID = 1

marketplace_table = table_of(Marketplace)


def check_marketplace(name: str | None, marketplace_id: int, *, live: str | None) -> None:
    """InvalidRequest (422) when the marketplace does not exist, or when `live` work is asked of
    one without Back Market. `live` names that work ("synced", "read or updated live"); None
    when the database alone answers.
    """
    if name is None:
        raise InvalidRequest(f"marketplace {marketplace_id} does not exist")
    if live is not None and marketplace_id != BACKMARKET_MARKETPLACE_ID:
        raise InvalidRequest(
            f"marketplace {marketplace_id} ({name}) has no Back Market connection; only "
            f"marketplace {BACKMARKET_MARKETPLACE_ID} (Back Market) can be {live}"
        )


async def marketplace_name(conn: AsyncConnection, marketplace_id: int) -> str | None:
    return (
        await conn.execute(
            sa.select(marketplace_table.c.name).where(marketplace_table.c.id == marketplace_id)
        )
    ).scalar_one_or_none()
