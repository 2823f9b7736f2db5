"""Idempotency-Key on add-quantity: replays, misuse, concurrent reuse and unknown outcomes."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.db import database_now
from app.models import IdempotencyKey, table_of
from app.services.quantity import add_quantity, idempotency
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    add_linked_listing,
    history_rows,
    holding_variation,
    interleave_requests,
    key_rows,
    stock_row,
    update_calls,
)

pytestmark = pytest.mark.watcher_off('counts every request to the simulator ("sends nothing")')

keys_table = table_of(IdempotencyKey)


async def add(service: Any, variation_id: int, quantity: int, key: str | None = "key-1") -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await service.http.post(
        f"/variations/{variation_id}/add-quantity", json={"quantity": quantity}, headers=headers
    )


async def test_repeat_with_same_key_and_body_answers_first_result_without_calling_back_market(
    service: Any, listing: LinkedListing
) -> None:
    first = await add(service, listing.variation_id, 3)
    requests_after_first = service.simulator.stats()["total_requests"]

    repeat = await add(service, listing.variation_id, 3)

    assert first.status_code == repeat.status_code == 200
    assert first.json()["idempotent_replay"] is False
    assert repeat.json() == {**first.json(), "idempotent_replay": True}
    assert service.simulator.stats()["total_requests"] == requests_after_first
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 8


async def test_repeat_of_a_settled_key_is_answered_while_another_change_holds_the_variation(
    service: Any, listing: LinkedListing
) -> None:
    first = await add(service, listing.variation_id, 3)
    ctx = service.app.state.container.ctx

    async with holding_variation(service, listing.variation_id):
        # Read before the variation's lock is asked for: no wait, no "busy" 409.
        repeat = await add_quantity(
            ctx,
            marketplace_id=1,
            variation_id=listing.variation_id,
            quantity=3,
            idempotency_key="key-1",
            lock_timeout=0.05,
        )

    assert repeat.model_dump(mode="json") == {**first.json(), "idempotent_replay": True}


async def test_history_row_of_the_addition_holds_the_idempotency_key(
    service: Any, listing: LinkedListing
) -> None:
    await add(service, listing.variation_id, 3, key="ui-click-42")

    history = await history_rows(service.engine, listing.variation_id)

    assert [h["idempotency_key"] for h in history] == ["ui-click-42"]


@pytest.mark.parametrize("other", ["quantity", "variation"])
async def test_same_key_with_another_body_is_409_and_sends_nothing(
    service: Any, listing: LinkedListing, other: str
) -> None:
    second = await add_linked_listing(service, variation_id=202)
    await add(service, listing.variation_id, 3)
    requests_after_first = service.simulator.stats()["total_requests"]

    if other == "quantity":
        response = await add(service, listing.variation_id, 4)
    else:
        response = await add(service, second.variation_id, 3)

    assert response.status_code == 409
    assert response.json()["reason"] == "idempotency_key_reused"
    assert service.simulator.stats()["total_requests"] == requests_after_first
    assert service.simulator.quantity_of(second.id) == START_QUANTITY


async def test_key_reused_concurrently_adds_once_and_every_repeat_gets_the_same_result(
    service: Any, listing: LinkedListing
) -> None:
    interleave_requests(service.simulator)
    responses = await asyncio.gather(
        *(add(service, listing.variation_id, 2, key="double-click") for _ in range(10))
    )

    assert [r.status_code for r in responses] == [200] * 10
    assert [r.json()["idempotent_replay"] for r in responses].count(False) == 1
    assert {r.json()["quantity"] for r in responses} == {START_QUANTITY + 2}
    assert len(update_calls(service.simulator)) == 1
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 2
    assert len(await history_rows(service.engine, listing.variation_id)) == 1


async def test_a_request_that_changed_nothing_frees_its_key_for_a_retry(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", count=2, kind="503", method="GET")
    failed = await add(service, listing.variation_id, 1)

    retried = await add(service, listing.variation_id, 1)

    assert failed.status_code == 502
    assert retried.status_code == 200
    assert retried.json()["idempotent_replay"] is False
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 1


async def test_unknown_outcome_is_504_and_the_key_remembers_previous_and_target(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")

    response = await add(service, listing.variation_id, 4)

    assert response.status_code == 504
    body = response.json()
    assert (body["previous_quantity"], body["target_quantity"]) == (5, 9)
    assert body["idempotency_key"] == "key-1"
    [row] = await key_rows(service.engine)
    assert (row["status"], row["previous_quantity"], row["target_quantity"]) == ("unknown", 5, 9)
    assert await stock_row(service.engine, listing.variation_id) is None


async def test_retry_after_unknown_outcome_records_the_update_when_target_is_there(
    service: Any, listing: LinkedListing
) -> None:
    # Back Market applied it; the answer was lost.
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")
    assert (await add(service, listing.variation_id, 4)).status_code == 504

    retried = await add(service, listing.variation_id, 4)

    assert retried.status_code == 200
    body = retried.json()
    assert (body["previous_quantity"], body["added"], body["quantity"]) == (5, 4, 9)
    assert body["idempotent_replay"] is True
    assert len(update_calls(service.simulator)) == 1
    assert service.simulator.quantity_of(listing.id) == 9
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 9
    history = await history_rows(service.engine, listing.variation_id)
    assert [(h["change_type"], h["idempotency_key"]) for h in history] == [
        ("add_quantity", "key-1")
    ]
    assert (await add(service, listing.variation_id, 4)).json() == body


async def test_retry_after_unknown_outcome_sends_again_when_previous_is_still_there(
    service: Any, listing: LinkedListing
) -> None:
    # A 5xx to the POST: the client cannot know it, but Back Market did not apply it.
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="500", method="POST")
    assert (await add(service, listing.variation_id, 4)).status_code == 504
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY

    retried = await add(service, listing.variation_id, 4)

    assert retried.status_code == 200
    body = retried.json()
    assert (body["previous_quantity"], body["quantity"], body["idempotent_replay"]) == (5, 9, False)
    assert [call["body"] for call in update_calls(service.simulator)] == [{"quantity": 9}]
    assert service.simulator.quantity_of(listing.id) == 9
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 9
    [row] = await key_rows(service.engine)
    assert row["status"] == "succeeded"


async def test_retry_after_unknown_outcome_is_409_with_all_quantities_when_stock_moved_otherwise(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")
    assert (await add(service, listing.variation_id, 4)).status_code == 504
    # An order came in meanwhile: 9 - 1.
    service.simulator.place_order(listing.id)

    retried = await add(service, listing.variation_id, 4)

    assert retried.status_code == 409
    body = retried.json()
    assert (body["previous_quantity"], body["target_quantity"], body["current_quantity"]) == (
        5,
        9,
        8,
    )
    assert body["reason"] == "outcome_unresolved"
    assert len(update_calls(service.simulator)) == 1
    assert service.simulator.quantity_of(listing.id) == 8
    assert await stock_row(service.engine, listing.variation_id) is None
    [row] = await key_rows(service.engine)
    assert row["status"] == "unknown"


async def test_key_of_a_request_that_died_after_sending_is_checked_before_sending_again(
    service: Any, listing: LinkedListing
) -> None:
    # What a crash between "about to send 9" and recording the answer leaves behind.
    claim = await idempotency.claim_key(
        service.engine,
        key="key-1",
        request_hash=idempotency.request_hash(
            variation_id=listing.variation_id, marketplace_id=1, quantity=4
        ),
        variation_id=listing.variation_id,
        marketplace_id=1,
        ttl_hours=48,
    )
    assert claim.claimed
    await idempotency.mark_sending(
        service.engine, key="key-1", previous_quantity=5, target_quantity=9
    )
    service.simulator.set_quantity(listing.id, 9)

    retried = await add(service, listing.variation_id, 4)

    assert retried.status_code == 200
    assert retried.json()["quantity"] == 9
    assert update_calls(service.simulator) == []


async def test_keys_are_kept_at_least_24_hours(service: Any, listing: LinkedListing) -> None:
    await add(service, listing.variation_id, 1)

    [row] = await key_rows(service.engine)

    assert row["expires_at"] - row["created_at"] >= timedelta(hours=24)


async def test_expired_keys_are_purged_and_an_expired_key_counts_as_new(
    service: Any, listing: LinkedListing
) -> None:
    await add(service, listing.variation_id, 1, key="old")
    async with service.engine.begin() as conn:
        now = await database_now(conn)
        await conn.execute(
            sa.update(keys_table).values(
                created_at=now - timedelta(hours=50), expires_at=now - timedelta(hours=2)
            )
        )

    again = await add(service, listing.variation_id, 1, key="old")

    assert again.status_code == 200
    assert again.json()["idempotent_replay"] is False
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 2
    [row] = await key_rows(service.engine)
    assert row["expires_at"] > now


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
async def test_unusable_idempotency_key_is_422_and_sends_nothing(
    service: Any, listing: LinkedListing, key: str
) -> None:
    response = await add(service, listing.variation_id, 1, key=key)

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert service.simulator.stats()["total_requests"] == 0


def test_key_problems_name_what_is_wrong_with_the_header() -> None:
    assert idempotency.key_problem("") == "Idempotency-Key must not be empty"
    assert idempotency.key_problem(" \t") == "Idempotency-Key must not be empty"
    assert idempotency.key_problem("k" * 255) is None
    assert idempotency.key_problem("k" * 256) == "Idempotency-Key must be at most 255 characters"
    assert idempotency.key_problem("clé-1") == "Idempotency-Key must be printable ASCII"
    assert idempotency.key_problem("key\x07") == "Idempotency-Key must be printable ASCII"
    assert idempotency.key_problem("ui-click-42 (retry)") is None


def test_the_request_hash_covers_variation_marketplace_and_quantity() -> None:
    canonical = b'{"marketplace_id":1,"quantity":3,"variation_id":101}'
    base = idempotency.request_hash(variation_id=101, marketplace_id=1, quantity=3)

    assert base == hashlib.sha256(canonical).hexdigest()
    assert base != idempotency.request_hash(variation_id=102, marketplace_id=1, quantity=3)
    assert base != idempotency.request_hash(variation_id=101, marketplace_id=4, quantity=3)
    assert base != idempotency.request_hash(variation_id=101, marketplace_id=1, quantity=4)


async def claim(engine: Any, key: str, *, ttl_hours: int = 24) -> idempotency.Claim:
    return await idempotency.claim_key(
        engine,
        key=key,
        request_hash="hash-" + key,
        variation_id=101,
        marketplace_id=1,
        ttl_hours=ttl_hours,
    )


async def test_a_claimed_key_is_in_progress_and_a_second_claim_reads_it(engine: Any) -> None:
    first = await claim(engine, "k1", ttl_hours=30)
    second = await claim(engine, "k1")

    expected = idempotency.KeyRecord(
        key="k1",
        request_hash="hash-k1",
        variation_id=101,
        marketplace_id=1,
        status=idempotency.KeyStatus.IN_PROGRESS,
        previous_quantity=None,
        target_quantity=None,
        response=None,
    )
    assert first == idempotency.Claim(claimed=True, record=expected)
    assert second == idempotency.Claim(claimed=False, record=expected)
    assert not expected.may_have_been_applied
    [row] = await key_rows(engine)
    assert row["expires_at"] - row["created_at"] == timedelta(hours=30)
    assert row["status"] == "in_progress"


async def test_a_key_records_what_was_sent_and_then_the_answer(engine: Any) -> None:
    await claim(engine, "k1")

    await idempotency.mark_sending(engine, key="k1", previous_quantity=5, target_quantity=8)
    sending = await idempotency.find_key(engine, "k1")
    await idempotency.mark_unknown(engine, key="k1", previous_quantity=5, target_quantity=8)
    unknown = await idempotency.find_key(engine, "k1")
    async with engine.begin() as conn:
        await idempotency.mark_succeeded(
            conn, key="k1", previous_quantity=6, target_quantity=9, response={"quantity": 9}
        )
    succeeded = await idempotency.find_key(engine, "k1")

    assert sending is not None and unknown is not None and succeeded is not None
    assert (sending.status, sending.previous_quantity, sending.target_quantity) == (
        idempotency.KeyStatus.IN_PROGRESS,
        5,
        8,
    )
    assert sending.may_have_been_applied
    assert (unknown.status, unknown.previous_quantity, unknown.target_quantity) == (
        idempotency.KeyStatus.UNKNOWN,
        5,
        8,
    )
    assert unknown.may_have_been_applied
    assert (succeeded.status, succeeded.previous_quantity, succeeded.target_quantity) == (
        idempotency.KeyStatus.SUCCEEDED,
        6,
        9,
    )
    assert succeeded.response == {"quantity": 9}
    assert not succeeded.may_have_been_applied
    assert await idempotency.find_key(engine, "other") is None


async def test_release_forgets_only_a_claim_that_sent_nothing_and_holds_no_subtraction(
    engine: Any,
) -> None:
    for key in ("plain", "pending", "unknown", "done", "other"):
        await claim(engine, key)
    # An addition confirmed by a retry after an unknown outcome, with a sale to subtract.
    await idempotency.mark_unknown(engine, key="pending", previous_quantity=5, target_quantity=8)
    async with engine.begin() as conn:
        await idempotency.mark_subtracting(
            conn, key="pending", previous_quantity=8, target_quantity=7, pending={"sold": 1}
        )
        await idempotency.mark_succeeded(
            conn, key="done", previous_quantity=5, target_quantity=6, response={"quantity": 6}
        )
    await idempotency.mark_unknown(engine, key="unknown", previous_quantity=5, target_quantity=6)

    for key in ("plain", "pending", "unknown", "done"):
        await idempotency.release_key(engine, key=key)

    assert [row["idempotency_key"] for row in await key_rows(engine)] == [
        "pending",
        "unknown",
        "done",
        "other",
    ]
    pending = await idempotency.find_key(engine, "pending")
    assert pending is not None
    assert (pending.status, pending.previous_quantity, pending.target_quantity) == (
        idempotency.KeyStatus.IN_PROGRESS,
        8,
        7,
    )
    assert pending.response == {"sold": 1}
    assert pending.may_have_been_applied


async def test_purging_deletes_only_expired_keys_and_counts_them(engine: Any) -> None:
    for key in ("old-1", "old-2", "live"):
        await claim(engine, key)
    async with engine.begin() as conn:
        now = await database_now(conn)
        await conn.execute(
            sa.update(keys_table)
            .where(keys_table.c.idempotency_key.in_(["old-1", "old-2"]))
            .values(expires_at=now - timedelta(seconds=1))
        )

    assert await idempotency.find_key(engine, "old-1") is None
    assert await idempotency.purge_expired_keys(engine) == 2
    assert await idempotency.purge_expired_keys(engine) == 0
    assert [row["idempotency_key"] for row in await key_rows(engine)] == ["live"]


async def test_a_claim_whose_blocking_row_vanished_before_it_was_read_claims_again(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await claim(engine, "k1")
    real_find_key = idempotency.find_key

    async def released_meanwhile(engine: Any, key: str) -> Any:
        # The earlier request releases its claim between our failed insert and our read.
        await idempotency.release_key(engine, key=key)
        monkeypatch.setattr(idempotency, "find_key", real_find_key)
        return None

    monkeypatch.setattr(idempotency, "find_key", released_meanwhile)
    again = await claim(engine, "k1")

    assert again.claimed
    [row] = await key_rows(engine)
    assert (row["idempotency_key"], row["status"]) == ("k1", "in_progress")


async def test_a_key_that_can_be_neither_claimed_nor_read_is_an_error(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await claim(engine, "k1")
    reads = 0

    async def never_found(engine: Any, key: str) -> None:
        nonlocal reads
        reads += 1

    monkeypatch.setattr(idempotency, "find_key", never_found)

    with pytest.raises(
        RuntimeError, match=r"^idempotency key 'k1' could be neither claimed nor read$"
    ):
        await claim(engine, "k1")
    assert reads == 2
