"""Many variations' stored quantities at once, for a listing page: `GET /variations/quantities`.

Answered from the database alone (one statement, no Back Market call, no lock), each with its
age: how long ago Back Market last confirmed it (bulk sync, orders watcher, refresh or
add-quantity), in the database clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, Field

from app.config import FIRST_MARKETPLACE_ID
from app.db import reading
from app.errors import InvalidRequest
from app.models import INT_MAX
from app.services.context import ServiceContext
from app.services.quantity.schemas import Quantity
from app.services.quantity.stored import read_stored_many

MAX_BATCH_IDS = 200

_INTEGER = re.compile(r"-?[0-9]+")


class StoredQuantity(Quantity):
    """The contract's `Quantity` read from the database, with its age."""

    age_seconds: float | None = Field(
        description=(
            "seconds since Back Market last confirmed this stock (database clock; whole "
            "seconds on MySQL/MariaDB); null when never synced"
        )
    )


class Quantities(BaseModel):
    """`GET /variations/quantities`'s answer."""

    quantities: list[StoredQuantity] = Field(
        description="one per known variation, in the order first asked"
    )
    unknown_ids: list[int] = Field(description="ids with no variation, in the order asked")


def parse_variation_ids(values: Iterable[str]) -> list[int]:
    """`ids` as sent (`1,2,3`; a repeated `ids=` works too) → distinct ids in first-seen order.

    Raises InvalidRequest (422) for no ids, an item that is not an integer or not a possible
    `variation.id` (1..2147483647), or more than MAX_BATCH_IDS distinct ids.
    """
    ids: dict[int, None] = {}
    for value in values:
        for raw in value.split(","):
            item = raw.strip()
            if not item:
                if value.strip():
                    raise InvalidRequest(f"ids: empty item in {value!r}; send ids=1,2,3")
                continue
            if not _INTEGER.fullmatch(item):
                raise InvalidRequest(f"ids: {item[:40]!r} is not an integer")
            number = int(item)
            if not 1 <= number <= INT_MAX:
                raise InvalidRequest(f"ids: {item[:40]} is out of range 1..{INT_MAX}")
            ids[number] = None
            if len(ids) > MAX_BATCH_IDS:
                raise InvalidRequest(
                    f"ids: at most {MAX_BATCH_IDS} distinct ids per request; ask in parts"
                )
    if not ids:
        raise InvalidRequest("ids: give at least one variation id, e.g. ids=1,2,3")
    return list(ids)


async def read_quantities(
    ctx: ServiceContext,
    *,
    variation_ids: list[int],
    marketplace_id: int = FIRST_MARKETPLACE_ID,
) -> Quantities:
    """The stored quantities of `variation_ids` (distinct) on the marketplace.

    A variation never synced to the marketplace answers quantity 0 and `age_seconds` null, as
    the single read does. Raises InvalidRequest when the marketplace does not exist.
    """
    async with reading(ctx.engine) as conn:
        stored = await read_stored_many(
            conn, variation_ids=variation_ids, marketplace_id=marketplace_id
        )
    by_id = {row.variation.id: row for row in stored}
    return Quantities(
        quantities=[
            StoredQuantity(
                **by_id[variation_id].quantity().model_dump(),
                age_seconds=_rounded(by_id[variation_id].age_seconds()),
            )
            for variation_id in variation_ids
            if variation_id in by_id
        ],
        unknown_ids=[variation_id for variation_id in variation_ids if variation_id not in by_id],
    )


def _rounded(age: float | None) -> float | None:
    return None if age is None else round(age, 3)
