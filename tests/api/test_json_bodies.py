"""A body not labelled as JSON gets a 422 that says what to send, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.watcher_off('counts every request to the simulator ("sends nothing")')


async def test_add_quantity_body_without_json_content_type_is_422_and_sends_nothing(
    service: Any,
) -> None:
    async with service.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO variation (id, reference_id, listed_stock) VALUES (1, '100000', 0)"
            )
        )
    service.simulator.reset_stats()

    answer = await service.http.post(
        "/variations/1/add-quantity",
        content=b'{"quantity": 1}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert answer.status_code == 422
    assert "Content-Type: application/json" in answer.json()["detail"]
    assert service.simulator.stats()["total_requests"] == 0


async def test_bulk_sync_body_without_content_type_is_422_and_starts_no_run(
    service: Any,
) -> None:
    answer = await service.http.post("/sync/bulk", content=b'{"dry_run": true}')

    assert answer.status_code == 422
    assert "no Content-Type" in answer.json()["detail"]
    assert (await service.http.get("/sync/runs")).json()["runs"] == []


async def test_bulk_sync_without_any_body_still_starts(service: Any) -> None:
    answer = await service.http.post("/sync/bulk?wait=true")

    assert answer.status_code == 200
    assert answer.json()["run"]["status"] == "completed"
