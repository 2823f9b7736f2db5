"""Helpers for the bulk sync tests: seed variations linked to simulator listings, read rows back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import utcnow
from app.services.backmarket import Listing, ListingPage

# Long before any page of a test is requested, so seeded rows never count as "changed after".
LONG_AGO = timedelta(hours=1)


@dataclass(frozen=True)
class Linked:
    variation_id: int
    listing_uuid: str
    listing_id: int
    sku: str


def identity(simulator: Any, index: int) -> Any:
    """The simulator's listing `index` (0-based): its id (UUID), listing_id and sku."""
    return simulator.store.identity(index)


async def add_variation(
    engine: AsyncEngine,
    *,
    reference_id: str | None = None,
    reference_uuid: str | None = None,
    sku: str | None = None,
    state: int | None = None,
) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.text(
                "INSERT INTO variation (reference_id, reference_uuid, sku, state, listed_stock) "
                "VALUES (:reference_id, :reference_uuid, :sku, :state, 0)"
            ),
            {
                "reference_id": reference_id,
                "reference_uuid": reference_uuid,
                "sku": sku,
                "state": state,
            },
        )
        return int(result.lastrowid)  # type: ignore[attr-defined]


async def add_stock(
    engine: AsyncEngine,
    *,
    variation_id: int,
    listed_stock: int,
    locked_stock: int = 0,
    marketplace_id: int = 1,
) -> None:
    """A stock row last changed long ago; the variation's sum is kept right."""
    changed = utcnow() - LONG_AGO
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock, last_api_quantity, stock_changed_at, created_at) "
                "VALUES (:variation_id, :marketplace_id, :listed, :locked, :available, :listed, "
                ":changed, :changed)"
            ),
            {
                "variation_id": variation_id,
                "marketplace_id": marketplace_id,
                "listed": listed_stock,
                "locked": locked_stock,
                "available": max(0, listed_stock - locked_stock),
                "changed": changed,
            },
        )
        await conn.execute(
            sa.text(
                "UPDATE variation SET listed_stock = (SELECT COALESCE(SUM(listed_stock), 0) "
                "FROM marketplace_stock WHERE variation_id = :id) WHERE id = :id"
            ),
            {"id": variation_id},
        )


async def link(
    engine: AsyncEngine,
    simulator: Any,
    index: int,
    *,
    by: str = "uuid",
    listed_stock: int | None = None,
    locked_stock: int = 0,
) -> Linked:
    """A variation following simulator listing `index` by "uuid", "listing_id" or "both"."""
    found = identity(simulator, index)
    variation_id = await add_variation(
        engine,
        reference_id=str(found.listing_id) if by in ("listing_id", "both") else None,
        reference_uuid=found.id if by in ("uuid", "both") else None,
        sku="OLD-SKU",
    )
    if listed_stock is not None:
        await add_stock(
            engine, variation_id=variation_id, listed_stock=listed_stock, locked_stock=locked_stock
        )
    return Linked(variation_id, found.id, found.listing_id, found.sku)


async def age_stock_changes(engine: AsyncEngine) -> None:
    """Move every stock change into the past, as if the next run came hours later."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE marketplace_stock SET stock_changed_at = :moment"),
            {"moment": utcnow() - LONG_AGO},
        )


async def stock_row(engine: AsyncEngine, variation_id: int, marketplace_id: int = 1) -> Any:
    async with engine.connect() as conn:
        return (
            (
                await conn.execute(
                    sa.text(
                        "SELECT * FROM marketplace_stock "
                        "WHERE variation_id = :v AND marketplace_id = :m"
                    ),
                    {"v": variation_id, "m": marketplace_id},
                )
            )
            .mappings()
            .first()
        )


async def variation_row(engine: AsyncEngine, variation_id: int) -> Any:
    async with engine.connect() as conn:
        return (
            (
                await conn.execute(
                    sa.text("SELECT * FROM variation WHERE id = :v"), {"v": variation_id}
                )
            )
            .mappings()
            .one()
        )


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def sync(service: Any, *, expect: int = 200, **body: Any) -> dict[str, Any]:
    """POST /sync/bulk?wait=true and return the finished run."""
    response = await service.http.post("/sync/bulk", params={"wait": "true"}, json=body or None)
    assert response.status_code == expect, response.text
    run: dict[str, Any] = response.json()["run"]
    return run


async def wait_for_run(
    service: Any, run_id: int, *, until: Any = None, attempts: int = 2000
) -> dict[str, Any]:
    """Poll GET /sync/runs/{id} until `until(run)` (default: finished); tiny sleeps, bounded."""
    check = until or (lambda run: run["status"] != "running")
    for _ in range(attempts):
        response = await service.http.get(f"/sync/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()["run"]
        if check(run):
            return run
        await asyncio.sleep(0.005)
    raise AssertionError(f"run {run_id} never reached the expected state: {run}")


def listing(
    uuid: str, *, listing_id: int | None, quantity: int, sku: str | None = None, state: int = 2
) -> Listing:
    return Listing(id=uuid, listing_id=listing_id, sku=sku, quantity=quantity, state=state)


class ScriptedFeed:
    """A stand-in for a marketplace adapter's listing feeds: fixed pages per market.

    A market's script is a list of pages (lists of listings) and may end with an exception,
    raised after the pages, as the real client raises IncompleteFeed after the good pages.
    """

    # Marketplace 1, whose feeds are the scripts' markets.
    id = 1

    def __init__(self, scripts: dict[str, Sequence[Sequence[Listing] | BaseException]]) -> None:
        self.scripts = scripts
        self.requests: list[str] = []
        self.feeds = list(scripts)

    async def aclose(self) -> None:
        return None

    async def iter_listing_pages(self, market: str) -> AsyncIterator[ListingPage]:
        script = self.scripts[market]
        pages = [step for step in script if not isinstance(step, BaseException)]
        count = sum(len(page) for page in pages)
        for number, page in enumerate(pages, start=1):
            self.requests.append(market)
            yield ListingPage(
                feed=market,
                page=number,
                fetched_at=datetime.now(UTC),
                listings=list(page),
                count=count,
                pages_expected=len(pages),
                requests=1,
            )
        for step in script:
            if isinstance(step, BaseException):
                raise step
