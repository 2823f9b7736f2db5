"""What a request may carry: ids within their column's range (else 422), a body that is UTF-8
JSON (else 422) and of at most 64 KiB (else 413, before the rest is read). None changes
anything or calls Back Market; all of it is in the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.http_limits import BIGINT_MAX, INT_MAX, MAX_BODY_BYTES, BodySizeLimitMiddleware
from tests.quantity.support import add_linked_listing, requests_sent, stock_row

pytestmark = pytest.mark.watcher_off('counts every request to the simulator ("sends nothing")')

VARIATION_ID = 7


@pytest.fixture
async def linked(service: Any) -> Any:
    """Variation 7 on a simulator listing; the simulator's counters start at zero."""
    await add_linked_listing(service, variation_id=VARIATION_ID)
    service.simulator.reset_stats()
    return service


async def runs_started(service: Any) -> list[Any]:
    answer = await service.http.get("/sync/runs")
    assert answer.status_code == 200
    runs: list[Any] = answer.json()["runs"]
    return runs


def assert_invalid(answer: Any, *location: str) -> None:
    assert answer.status_code == 422, answer.text
    assert [tuple(problem["loc"][: len(location)]) for problem in answer.json()["detail"]] == [
        location
    ]


# --- ids past their column's range ---------------------------------------------------------


async def test_a_run_id_past_bigint_is_422(service: Any) -> None:
    answer = await service.http.get("/sync/runs/50946824582390129623040")

    assert_invalid(answer, "path", "run_id")


async def test_the_largest_bigint_run_id_is_a_plain_404(service: Any) -> None:
    answer = await service.http.get(f"/sync/runs/{BIGINT_MAX}")

    assert answer.status_code == 404


async def test_a_variation_id_past_int_is_422_and_calls_no_one(linked: Any) -> None:
    answer = await linked.http.get("/variations/707500212781217575461715968/quantity")

    assert_invalid(answer, "path", "variation_id")
    assert requests_sent(linked.simulator) == 0


async def test_the_largest_int_variation_id_is_a_plain_404(service: Any) -> None:
    answer = await service.http.get(f"/variations/{INT_MAX}/quantity")

    assert answer.status_code == 404


async def test_a_bulk_sync_marketplace_id_past_int_is_422_and_starts_no_run(
    service: Any,
) -> None:
    answer = await service.http.post("/sync/bulk", json={"marketplace_id": 74480812141065650176})

    assert_invalid(answer, "body", "marketplace_id")
    assert await runs_started(service) == []


async def test_an_add_quantity_marketplace_id_past_int_is_422_and_sends_nothing(
    linked: Any,
) -> None:
    answer = await linked.http.post(
        f"/variations/{VARIATION_ID}/add-quantity?marketplace_id=432324983964444120842240",
        json={"quantity": 1},
    )

    assert_invalid(answer, "query", "marketplace_id")
    assert requests_sent(linked.simulator) == 0


@pytest.mark.parametrize(
    "query",
    [
        f"/sync/runs?marketplace_id={INT_MAX + 1}",
        "/sync/runs?marketplace_id=0",
        f"/variations/quantities?ids=1&marketplace_id={INT_MAX + 1}",
        f"/variations/1/quantity?marketplace_id={INT_MAX + 1}",
        "/variations/1/quantity?max_age=99999999999999999999",
    ],
)
async def test_a_query_integer_out_of_range_is_422(service: Any, query: str) -> None:
    answer = await service.http.get(query)

    assert answer.status_code == 422, answer.text


# --- bodies that are not UTF-8 JSON --------------------------------------------------------

NOT_UTF8 = b'{"quantity": 1, "note": "\xff\xfe"}'
NOT_JSON = b"quantity=1"
TOO_DEEP = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize(
    "body", [NOT_UTF8, NOT_JSON, TOO_DEEP], ids=["not-utf8", "not-json", "deep"]
)
async def test_an_add_quantity_body_that_cannot_be_decoded_is_422_and_sends_nothing(
    linked: Any, body: bytes
) -> None:
    answer = await linked.http.post(
        f"/variations/{VARIATION_ID}/add-quantity",
        content=body,
        headers={"Content-Type": "application/json"},
    )

    assert_invalid(answer, "body")
    assert answer.json()["detail"][0]["type"] == "json_invalid"
    assert requests_sent(linked.simulator) == 0
    assert await stock_row(linked.engine, VARIATION_ID) is None


@pytest.mark.parametrize("body", [NOT_UTF8, NOT_JSON], ids=["not-utf8", "not-json"])
async def test_a_bulk_sync_body_that_cannot_be_decoded_is_422_and_starts_no_run(
    service: Any, body: bytes
) -> None:
    answer = await service.http.post(
        "/sync/bulk", content=body, headers={"Content-Type": "application/json"}
    )

    assert_invalid(answer, "body")
    assert answer.json()["detail"][0]["type"] == "json_invalid"
    assert await runs_started(service) == []


# --- bodies above 64 KiB --------------------------------------------------------------------


class CountedBody:
    """A streamed body of `chunks` chunks of 4 KiB that counts how many were read."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield b" " * 4096


async def test_a_200_kb_body_is_413_and_starts_no_run(service: Any) -> None:
    body = b'{"dry_run": true}' + b" " * 200_000

    answer = await service.http.post(
        "/sync/bulk", content=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 413
    assert str(MAX_BODY_BYTES) in answer.json()["detail"]
    assert await runs_started(service) == []


async def test_a_declared_length_above_the_limit_is_413_before_any_byte_is_read(
    linked: Any,
) -> None:
    body = CountedBody(chunks=50)

    answer = await linked.http.post(
        f"/variations/{VARIATION_ID}/add-quantity",
        content=body,
        headers={"Content-Type": "application/json", "Content-Length": str(50 * 4096)},
    )

    assert answer.status_code == 413
    assert body.read == 0
    assert requests_sent(linked.simulator) == 0


async def test_a_chunked_body_is_413_once_past_the_limit_without_reading_the_rest(
    linked: Any,
) -> None:
    body = CountedBody(chunks=50)

    answer = await linked.http.post(
        f"/variations/{VARIATION_ID}/add-quantity",
        content=body,
        headers={"Content-Type": "application/json"},
    )

    assert answer.status_code == 413
    assert "detail" in answer.json()
    assert body.read == MAX_BODY_BYTES // 4096 + 1
    assert requests_sent(linked.simulator) == 0


async def test_a_body_of_exactly_64_kib_is_accepted(service: Any) -> None:
    start = b'{"dry_run": true}'
    body = start + b" " * (MAX_BODY_BYTES - len(start))

    answer = await service.http.post(
        "/sync/bulk?wait=true", content=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 200
    assert answer.json()["run"]["dry_run"] is True


async def test_a_body_read_outside_the_apps_error_handling_still_gets_a_413() -> None:
    async def reads_its_whole_body(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the whole body was read")

    chunks = [b"x" * 10, b"x" * 10, b"x" * 10]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = BodySizeLimitMiddleware(reads_its_whole_body, max_body_bytes=15)
    await middleware({"type": "http", "headers": []}, receive, send)

    assert sent[0]["status"] == 413
    assert len(chunks) == 1


# --- the document ---------------------------------------------------------------------------


async def test_every_body_taking_operation_documents_413_and_422_and_every_protected_one_401(
    service: Any,
) -> None:
    document = (await service.http.get("/openapi.json")).json()

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if "requestBody" in operation:
                assert {"413", "422"} <= statuses, (method, path)
            if path not in ("/healthz", "/readyz"):
                assert "401" in statuses, (method, path)
