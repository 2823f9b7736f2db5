"""Which variation follows which listing: set-based per batch, plus the import of unknown ones.

Marketplace 1: a variation follows a listing by `variation.reference_uuid = listing.id`
(preferred) or `variation.reference_id = listing.listing_id`. Every other marketplace: by
`variation.sku` = the listing's SKU, both trimmed, compared exactly; a SKU that two or more
variations carry matches none of them (`Matches.ambiguous`), a listing without SKU none at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import Variation, table_of, utcnow
from app.services.marketplace import Listing

# Values per IN list when matching listings to variations.
MATCH_CHUNK = 1000

variation_table = table_of(Variation)


@dataclass(slots=True)
class Observed:
    """A listing as read, with the moment (database clock) its row must not have changed since."""

    listing: Listing
    cutoff: datetime


@dataclass(slots=True)
class Matches:
    """A batch matched: variation id -> the listing it follows, and the listings none follows."""

    assigned: dict[int, Observed]
    unknown: list[Observed]
    # SKU -> how many variations carry it, for the batch's SKUs that match more than one.
    ambiguous: dict[str, int] = field(default_factory=dict)


class VariationIdSet:
    """Ids of the variations a run has matched: one bit per id, so a million cost 125 kB."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._count = 0

    def add(self, variation_id: int) -> None:
        index, bit = divmod(variation_id, 8)
        if index >= len(self._bits):
            self._bits.extend(bytes(index + 1 - len(self._bits) + len(self._bits) // 2))
        mask = 1 << bit
        if not self._bits[index] & mask:
            self._bits[index] |= mask
            self._count += 1

    def __contains__(self, variation_id: object) -> bool:
        if not isinstance(variation_id, int) or variation_id < 0:
            return False
        index, bit = divmod(variation_id, 8)
        return index < len(self._bits) and bool(self._bits[index] & (1 << bit))

    def __len__(self) -> int:
        return self._count


async def match_listings(
    conn: AsyncConnection, batch: list[Observed], *, by_sku: bool = False
) -> Matches:
    """Match a batch's listings to variations: by reference (marketplace 1; a UUID match beats
    a listing_id match), or `by_sku` (every other marketplace)."""
    by_uuid = _newest_copies(batch)
    if by_sku:
        return await _match_by_sku(conn, by_uuid)
    by_listing_id = {
        str(observed.listing.listing_id): observed
        for observed in by_uuid.values()
        if observed.listing.listing_id is not None
    }
    # MySQL compares these columns case- and trailing-space-insensitively; look the rows it
    # returns up the same way.
    uuid_key = {match_key(key): observed for key, observed in by_uuid.items()}
    listing_id_key = {match_key(key): observed for key, observed in by_listing_id.items()}

    assigned: dict[int, Observed] = {}
    for variation_id, _reference_id, reference_uuid in await variations_by(
        conn, variation_table.c.reference_uuid, list(by_uuid)
    ):
        by_reference_uuid = uuid_key.get(match_key(reference_uuid))
        if by_reference_uuid is not None:
            assigned[variation_id] = by_reference_uuid
    for variation_id, reference_id, _reference_uuid in await variations_by(
        conn, variation_table.c.reference_id, list(by_listing_id)
    ):
        by_reference_id = listing_id_key.get(match_key(reference_id))
        if by_reference_id is not None:
            assigned.setdefault(variation_id, by_reference_id)

    matched_listings = {observed.listing.id for observed in assigned.values()}
    unknown = [observed for uuid_, observed in by_uuid.items() if uuid_ not in matched_listings]
    return Matches(assigned=assigned, unknown=unknown)


def _newest_copies(batch: list[Observed]) -> dict[str, Observed]:
    """The batch's listings by id. A listing repeated within the batch (the catalogue shifted
    between pages): the copy from the later-requested page is the newer one."""
    by_id: dict[str, Observed] = {}
    for observed in batch:
        kept = by_id.get(observed.listing.id)
        if kept is None or observed.cutoff >= kept.cutoff:
            by_id[observed.listing.id] = observed
    return by_id


async def _match_by_sku(conn: AsyncConnection, by_id: dict[str, Observed]) -> Matches:
    """Each listing to the one variation carrying its SKU; a SKU on several variations, or a
    listing without SKU, matches none. Two listings with one SKU: the variation follows the one
    read last (the newer), as the same listing read twice does."""
    by_sku: dict[str, Observed] = {}
    unknown: list[Observed] = []
    for observed in by_id.values():
        sku = sku_key(observed.listing.sku)
        if not sku:
            unknown.append(observed)
            continue
        kept = by_sku.get(sku)
        if kept is not None:
            # The other copy is known to no variation under this SKU: counted as unknown.
            if observed.cutoff >= kept.cutoff:
                unknown.append(kept)
            else:
                unknown.append(observed)
                continue
        by_sku[sku] = observed

    carriers: dict[str, list[int]] = {}
    for variation_id, sku in await variations_by_sku(conn, list(by_sku)):
        # The IN list found it by the database's collation (case-insensitive on MySQL): keep
        # only the exact matches.
        key = sku_key(sku)
        if key in by_sku:
            carriers.setdefault(key, []).append(variation_id)

    assigned: dict[int, Observed] = {}
    ambiguous: dict[str, int] = {}
    for sku, observed in by_sku.items():
        variation_ids = carriers.get(sku, [])
        if len(variation_ids) == 1:
            assigned[variation_ids[0]] = observed
        elif variation_ids:
            ambiguous[sku] = len(variation_ids)
        else:
            unknown.append(observed)
    return Matches(assigned=assigned, unknown=unknown, ambiguous=ambiguous)


async def variations_by_sku(conn: AsyncConnection, skus: Sequence[str]) -> list[tuple[int, str]]:
    """(id, sku) of every variation whose SKU is one of `skus`: all of them, so that a SKU
    carried twice is seen as such; soft-deleted ones aside (a SKU carried by one live variation
    and a deleted one is the live one's)."""
    found: list[tuple[int, str]] = []
    for start in range(0, len(skus), MATCH_CHUNK):
        rows = await conn.execute(
            sa.select(variation_table.c.id, variation_table.c.sku).where(
                variation_table.c.sku.in_(skus[start : start + MATCH_CHUNK]),
                variation_table.c.deleted_at.is_(None),
            )
        )
        found.extend((row.id, row.sku) for row in rows)
    return found


async def variations_by(
    conn: AsyncConnection, column: sa.Column[Any], values: Sequence[str]
) -> list[tuple[int, str | None, str | None]]:
    """(id, reference_id, reference_uuid) of the variations whose `column` is one of `values`,
    soft-deleted ones aside."""
    found: list[tuple[int, str | None, str | None]] = []
    for start in range(0, len(values), MATCH_CHUNK):
        rows = await conn.execute(
            sa.select(
                variation_table.c.id,
                variation_table.c.reference_id,
                variation_table.c.reference_uuid,
            ).where(
                column.in_(values[start : start + MATCH_CHUNK]),
                variation_table.c.deleted_at.is_(None),
            )
        )
        found.extend((row.id, row.reference_id, row.reference_uuid) for row in rows)
    return found


async def import_variations(conn: AsyncConnection, unknown: list[Observed]) -> dict[int, Observed]:
    """One multi-row insert of new variations for unknown listings; their ids mapped to them."""
    now = utcnow()
    await conn.execute(
        sa.insert(variation_table),
        [
            {
                "reference_id": None if o.listing.listing_id is None else str(o.listing.listing_id),
                "reference_uuid": o.listing.id,
                "sku": o.listing.sku,
                "state": o.listing.state,
                "listed_stock": 0,
                "created_at": now,
                "updated_at": now,
            }
            for o in unknown
        ],
    )
    by_key = {match_key(o.listing.id): o for o in unknown}
    created = await variations_by(
        conn, variation_table.c.reference_uuid, [o.listing.id for o in unknown]
    )
    return {
        variation_id: by_key[match_key(reference_uuid)]
        for variation_id, _, reference_uuid in created
        if match_key(reference_uuid) in by_key
    }


def sku_key(value: str | None) -> str:
    """A SKU as matched: trimmed, case kept."""
    return (value or "").strip()


def match_key(value: str | None) -> str:
    return (value or "").strip().lower()


def reference_of(listing: Listing) -> str:
    """What the stock history records as the listing's reference: its listing_id, else its UUID."""
    return str(listing.listing_id) if listing.listing_id is not None else listing.id
