"""The stock rules under random interleavings: a Hypothesis state machine against a model.

Reads of Back Market (bulk-sync pages, refreshes, watcher polls) are sent at one step and
answered at a later one, while additions, customer orders and another application's direct
UPDATEs land in between. Everything is written through the one stock writer
(`app.services.stock`) and, for additions, the idempotency record
(`app.services.quantity.idempotency`), on SQLite. After every step the database must match
the model and keep the invariants:

- `available_stock = max(0, listed_stock - locked_stock)` on every stock row, and
  `variation.listed_stock = SUM(listed_stock)` over its marketplaces;
- a read never overwrites a row changed after the read was sent (an older snapshot never
  overwrites a newer value), and is applied otherwise;
- each addition is applied once: a repeat of its Idempotency-Key claims nothing and answers
  the first result; the same key with another body claims nothing either.

Steps are a few milliseconds apart, so the database clock (millisecond resolution on SQLite)
orders them the way the model does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.db import create_engine, database_now, transaction
from app.models import ChangeType, MarketplaceStock, Variation, table_of
from app.services.quantity import idempotency
from app.services.stock import StockObservation, write_observations
from tests.conftest import empty_tables

T = TypeVar("T")

BACK_MARKET = 1
OTHER_MARKETPLACE = 4
VARIATIONS = (1, 2, 3)
KEYS = ("key-a", "key-b", "key-c", "key-d")
# Longer than one tick of SQLite's millisecond clock, so consecutive steps never share one.
STEP_GAP_SECONDS = 0.002

STATE_MACHINE_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

stock_table = table_of(MarketplaceStock)
variation_table = table_of(Variation)

READ_KINDS = {
    "bulk_page": ChangeType.BULK_SYNC,
    "refresh": ChangeType.REFRESH,
    "watcher_poll": ChangeType.ORDER_SYNC,
}


@dataclass
class ModelRow:
    listed: int
    locked: int
    # The step of the last change of listed or locked stock (what stock_changed_at stamps).
    changed_step: int


@dataclass
class PendingRead:
    kind: str
    sent_step: int
    sent_at: datetime
    # What Back Market answered for each variation when the request was sent.
    quantities: dict[int, int]


@dataclass
class Addition:
    variation_id: int
    quantity: int
    answered_quantity: int


@dataclass
class Model:
    back_market: dict[int, int]
    other_marketplace: dict[int, int]
    rows: dict[int, ModelRow] = field(default_factory=dict)
    additions: dict[str, Addition] = field(default_factory=dict)


class StockRules(RuleBasedStateMachine):
    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(database_url)
        self.step = 0
        self.pending: list[PendingRead] = []
        self.model = Model(
            back_market={variation_id: 5 for variation_id in VARIATIONS},
            # Variation 3 is listed on another marketplace too: it counts in the variation's sum.
            other_marketplace={3: 4},
        )
        self.run(self._start())

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    async def _start(self) -> None:
        await empty_tables(self.engine)
        async with transaction(self.engine) as conn:
            await conn.execute(
                sa.insert(variation_table),
                [{"id": variation_id, "listed_stock": 0} for variation_id in VARIATIONS],
            )
            for variation_id, listed in self.model.other_marketplace.items():
                await conn.execute(
                    sa.insert(stock_table).values(
                        variation_id=variation_id,
                        marketplace_id=OTHER_MARKETPLACE,
                        listed_stock=listed,
                        locked_stock=0,
                        available_stock=listed,
                    )
                )
                await conn.execute(
                    sa.update(variation_table)
                    .where(variation_table.c.id == variation_id)
                    .values(listed_stock=listed)
                )

    async def _next_step(self) -> int:
        await asyncio.sleep(STEP_GAP_SECONDS)
        self.step += 1
        return self.step

    # -- Back Market reads, sent now and answered later ------------------------------------------

    @rule(
        kind=st.sampled_from(sorted(READ_KINDS)),
        variation_ids=st.sets(st.sampled_from(VARIATIONS), min_size=1),
    )
    def send_read(self, kind: str, variation_ids: set[int]) -> None:
        if kind != "bulk_page":
            # A refresh and a watcher poll read one listing each.
            variation_ids = {min(variation_ids)}
        self.run(self._send_read(kind, variation_ids))

    async def _send_read(self, kind: str, variation_ids: set[int]) -> None:
        step = await self._next_step()
        async with self.engine.connect() as conn:
            sent_at = await database_now(conn)
        self.pending.append(
            PendingRead(
                kind=kind,
                sent_step=step,
                sent_at=sent_at,
                quantities={v: self.model.back_market[v] for v in sorted(variation_ids)},
            )
        )

    @precondition(lambda self: bool(self.pending))
    @rule(index=st.integers(min_value=0, max_value=10))
    def answer_arrives(self, index: int) -> None:
        read = self.pending.pop(index % len(self.pending))
        self.run(self._answer_arrives(read))

    async def _answer_arrives(self, read: PendingRead) -> None:
        step = await self._next_step()
        async with transaction(self.engine) as conn:
            written = await write_observations(
                conn,
                marketplace_id=BACK_MARKET,
                observations=[
                    StockObservation(variation_id=v, quantity=q, not_changed_since=read.sent_at)
                    for v, q in read.quantities.items()
                ],
                change_type=READ_KINDS[read.kind],
            )
        expected_skipped = set()
        for variation_id, quantity in read.quantities.items():
            row = self.model.rows.get(variation_id)
            if row is not None and row.changed_step > read.sent_step:
                expected_skipped.add(variation_id)
            else:
                self._model_write(variation_id, quantity, step)
        assert written.skipped_variation_ids == expected_skipped
        assert written.skipped_newer == len(expected_skipped)

    # -- Back Market changes on its own ----------------------------------------------------------

    @rule(variation_id=st.sampled_from(VARIATIONS))
    def customer_orders(self, variation_id: int) -> None:
        if self.model.back_market[variation_id] > 0:
            self.model.back_market[variation_id] -= 1

    # -- additions, with an Idempotency-Key ------------------------------------------------------

    @rule(
        variation_id=st.sampled_from(VARIATIONS),
        quantity=st.integers(min_value=-3, max_value=3).filter(bool),
        key=st.sampled_from(KEYS),
    )
    def add_quantity(self, variation_id: int, quantity: int, key: str) -> None:
        self.run(self._add_quantity(variation_id, quantity, key))

    async def _add_quantity(self, variation_id: int, quantity: int, key: str) -> None:
        step = await self._next_step()
        fingerprint = idempotency.request_hash(
            variation_id=variation_id, marketplace_id=BACK_MARKET, quantity=quantity
        )
        claim = await idempotency.claim_key(
            self.engine,
            key=key,
            request_hash=fingerprint,
            variation_id=variation_id,
            marketplace_id=BACK_MARKET,
            ttl_hours=48,
        )
        earlier = self.model.additions.get(key)
        if earlier is not None:
            # A repeat: nothing is claimed, so nothing is sent or written again.
            assert not claim.claimed
            same_body = (earlier.variation_id, earlier.quantity) == (variation_id, quantity)
            assert (claim.record.request_hash == fingerprint) is same_body
            assert claim.record.status is idempotency.KeyStatus.SUCCEEDED
            assert claim.record.response == {"quantity": earlier.answered_quantity}
            return
        assert claim.claimed
        previous = self.model.back_market[variation_id]
        target = previous + quantity
        if target < 0:
            # Refused before anything was sent: the key is free for a retry.
            await idempotency.release_key(self.engine, key=key)
            assert await idempotency.find_key(self.engine, key) is None
            return
        await idempotency.mark_sending(
            self.engine, key=key, previous_quantity=previous, target_quantity=target
        )
        self.model.back_market[variation_id] = target
        async with transaction(self.engine) as conn:
            written = await write_observations(
                conn,
                marketplace_id=BACK_MARKET,
                observations=[StockObservation(variation_id=variation_id, quantity=target)],
                change_type=ChangeType.ADD_QUANTITY,
                idempotency_key=key,
            )
            await idempotency.mark_succeeded(
                conn,
                key=key,
                previous_quantity=previous,
                target_quantity=target,
                response={"quantity": target},
            )
        # Back Market's answer to our own update is the newest value there is.
        assert written.skipped_newer == 0
        self._model_write(variation_id, target, step)
        self.model.additions[key] = Addition(variation_id, quantity, target)

    # -- another application writing the same database -------------------------------------------

    @rule(
        variation_id=st.sampled_from(VARIATIONS),
        listed=st.integers(min_value=0, max_value=9),
        locked=st.integers(min_value=0, max_value=4),
    )
    def other_application_writes(self, variation_id: int, listed: int, locked: int) -> None:
        if variation_id not in self.model.rows:
            return
        self.run(self._other_application_writes(variation_id, listed, locked))

    async def _other_application_writes(self, variation_id: int, listed: int, locked: int) -> None:
        step = await self._next_step()
        # A plain UPDATE as the seed application writes it; the database trigger stamps
        # stock_changed_at when listed or locked stock changes.
        async with transaction(self.engine) as conn:
            await conn.execute(
                sa.update(stock_table)
                .where(
                    stock_table.c.variation_id == variation_id,
                    stock_table.c.marketplace_id == BACK_MARKET,
                )
                .values(
                    listed_stock=listed,
                    locked_stock=locked,
                    available_stock=max(0, listed - locked),
                )
            )
            await conn.execute(
                sa.update(variation_table)
                .where(variation_table.c.id == variation_id)
                .values(listed_stock=listed + self.model.other_marketplace.get(variation_id, 0))
            )
        row = self.model.rows[variation_id]
        if (row.listed, row.locked) != (listed, locked):
            self.model.rows[variation_id] = ModelRow(listed, locked, step)

    # -- the model's write and the checks ---------------------------------------------------------

    def _model_write(self, variation_id: int, quantity: int, step: int) -> None:
        row = self.model.rows.get(variation_id)
        if row is None:
            self.model.rows[variation_id] = ModelRow(quantity, 0, step)
        elif row.listed != quantity:
            self.model.rows[variation_id] = ModelRow(quantity, row.locked, step)

    @invariant()
    def database_matches_the_model_and_the_invariants(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        async with self.engine.connect() as conn:
            stock = (
                (
                    await conn.execute(
                        sa.select(
                            stock_table.c.variation_id,
                            stock_table.c.marketplace_id,
                            stock_table.c.listed_stock,
                            stock_table.c.locked_stock,
                            stock_table.c.available_stock,
                        )
                    )
                )
                .mappings()
                .all()
            )
            variations = {
                variation_id: listed
                for variation_id, listed in await conn.execute(
                    sa.select(variation_table.c.id, variation_table.c.listed_stock)
                )
            }
            keys = (await conn.execute(sa.select(idempotency.keys_table))).mappings().all()
        for row in stock:
            assert row["available_stock"] == max(0, row["listed_stock"] - row["locked_stock"]), row
        for variation_id, listed in variations.items():
            assert listed == sum(
                row["listed_stock"] for row in stock if row["variation_id"] == variation_id
            ), variation_id
        back_market = {
            row["variation_id"]: (row["listed_stock"], row["locked_stock"])
            for row in stock
            if row["marketplace_id"] == BACK_MARKET
        }
        assert back_market == {v: (row.listed, row.locked) for v, row in self.model.rows.items()}
        # One settled row per applied addition, and no other.
        assert {
            row["idempotency_key"]: (row["status"], row["target_quantity"]) for row in keys
        } == {
            key: (idempotency.KeyStatus.SUCCEEDED.value, addition.answered_quantity)
            for key, addition in self.model.additions.items()
        }


def test_stock_rules_hold_under_random_interleavings(database_urls: dict[str, str]) -> None:
    run_state_machine_as_test(
        lambda: StockRules(database_urls["sqlite"]), settings=STATE_MACHINE_SETTINGS
    )
