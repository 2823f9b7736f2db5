"""Schemathesis against the service's own OpenAPI document, in-process, with the simulator
behind the service: no input it can generate gets a 5xx, every status answered is documented,
and every answer matches its documented schema and media type.

Each operation is fuzzed in both of schemathesis's generation modes: valid inputs (within the
documented bounds) and invalid ones (past them, wrong types, bodies that break the schema).
A fixed seed keeps the inputs the same from one run to the next; `FUZZ_SEED=<n>` in the
environment explores others, and `FUZZ_EXAMPLES=<n>` (default 30 per operation and mode)
searches longer. (schemathesis's own pytest plugin does not run under pytest 9, so the
operations' Hypothesis strategies are driven here directly.)
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.db import create_engine
from app.http_limits import INT_MAX
from app.main import create_app
from app.models import Variation, table_of
from simulator.app import create_simulator_app
from simulator.config import SimulatorConfig
from tests.conftest import empty_tables, prepare_database

FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "20261128"))
# CI runs a bounded number; `FUZZ_EXAMPLES=<n>` runs a longer search on demand.
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Prometheus text, which the document does not describe.
NOT_FUZZED = {"GET /metrics"}


def service_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        backmarket_base_url="http://bm.test",
        backmarket_token="sim-token",
        backmarket_user_agent="BM-Tests-StockSync;tests@example.com",
        backmarket_requests_per_10s=10_000,
        backmarket_max_attempts=2,
        sync_interval_minutes=0,
        order_sync_interval_seconds=0,
        run_migrations_on_startup=False,
        api_keys=[],
        cors_origins=[],
    )


def fuzzed_operations() -> list[tuple[str, GenerationMode]]:
    """Every operation of the document with valid inputs, and those that take any input with
    invalid ones too. Building the app opens nothing."""
    document = create_app(service_settings("sqlite+aiosqlite://")).openapi()
    fuzzed: list[tuple[str, GenerationMode]] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            if label in NOT_FUZZED:
                continue
            fuzzed.append((label, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                fuzzed.append((label, GenerationMode.NEGATIVE))
    return fuzzed


async def _seed_variations(database_url: str, simulator: Any) -> None:
    """Variations 1 and 3 linked to simulator listings; 2 with no Back Market reference."""
    engine = create_engine(database_url)
    await empty_tables(engine)
    rows: list[dict[str, Any]] = []
    for variation_id in (1, 3):
        identity = simulator.add_listing(quantity=40, sku=f"FUZZ-{variation_id}")
        rows.append(
            {
                "id": variation_id,
                "reference_id": str(identity["listing_id"]),
                "reference_uuid": identity["id"],
                "listed_stock": 0,
            }
        )
    rows.append({"id": 2, "reference_id": None, "reference_uuid": None, "listed_stock": 0})
    async with engine.begin() as conn:
        await conn.execute(sa.insert(table_of(Variation)), rows)
    await engine.dispose()


@pytest.fixture
def fuzz_db_url(db_url: str, tmp_path: Path) -> str:
    """MariaDB: the session's database. SQLite: a file of this test's own, migrated afresh.

    Under load, a bulk sync a fuzzed `POST /sync/bulk` started in the background has been seen
    to leave the shared SQLite file write-locked past the next test's start ("database is
    locked" setting up the next operation); each SQLite case gets its own file so that one
    operation's leftovers cannot fail another's set-up.
    """
    if not db_url.startswith("sqlite"):
        return db_url
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    asyncio.run(prepare_database(url))
    return url


@pytest.fixture
def service_schema(fuzz_db_url: str) -> Iterator[Any]:
    """The document as the running service serves it; requests go to that same app."""
    db_url = fuzz_db_url
    simulator_app = create_simulator_app(
        SimulatorConfig(listings=20, seed=7, timeout_fault_s=0.01, rate_limit_block_s=0.01)
    )
    asyncio.run(_seed_variations(db_url, simulator_app.state.sim))
    settings_ = service_settings(db_url)
    backmarket_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator_app), base_url=settings_.backmarket_base_url
    )
    app = create_app(settings_, backmarket_http=backmarket_http)
    # Loading the document starts the app's lifespan on schemathesis's own event loop.
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=schemathesis.Config.from_dict({"seed": FUZZ_SEED})
    )
    backmarket = app.state.container.ctx.marketplaces.get(1).client
    backmarket.backoff_base_seconds = 0.0
    backmarket.backoff_cap_seconds = 0.0
    try:
        yield schema
    finally:
        shutdown_lifespans()


@pytest.mark.parametrize(("operation", "mode"), fuzzed_operations())
def test_no_generated_input_gets_a_server_error_or_an_undocumented_answer(
    service_schema: Any, operation: str, mode: GenerationMode
) -> None:
    found = service_schema.find_operation_by_label(operation)
    assert found is not None, operation

    @seed(FUZZ_SEED)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=found.as_strategy(generation_mode=mode))
    def call_and_validate(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    call_and_validate()


# -- the document states what the service enforces -----------------------------------------

# Operations whose inputs the service checks beyond FastAPI's own validation.
CHECKED_BY_THE_SERVICE = [
    "GET /variations/quantities",
    "POST /variations/{variation_id}/add-quantity",
    "PUT /variations/{variation_id}/quantity",
]
# schemathesis warns ("mostly rejected generated data") when the valid inputs of an operation
# are answered only with 4xx, at least a tenth of them not 404. A document that states the
# service's constraints gets the valid inputs through: at most this share may be refused.
MOST_VALID_INPUTS_REFUSED = 0.5


def test_the_document_states_the_form_of_ids_and_a_non_zero_quantity() -> None:
    document = create_app(service_settings("sqlite+aiosqlite://")).openapi()
    ids = next(
        parameter
        for parameter in document["paths"]["/variations/quantities"]["get"]["parameters"]
        if parameter["name"] == "ids"
    )
    operation = document["paths"]["/variations/{variation_id}/add-quantity"]["post"]
    quantity = document["components"]["schemas"]["AddQuantityBody"]["properties"]["quantity"]

    assert ids["required"] is True
    assert ids["schema"]["type"] == "array"
    assert ids["schema"]["minItems"] == 1
    pattern = re.compile(ids["schema"]["items"]["pattern"])
    for accepted in ["1", "1,2,3", str(INT_MAX), ",".join(str(n) for n in range(1, 201))]:
        assert pattern.fullmatch(accepted), accepted
    for refused in ["", "0", "a", "1,,2", "-3", "1.5", str(INT_MAX + 1), "1,2,", "01"]:
        assert not pattern.fullmatch(refused), refused
    assert not pattern.fullmatch(",".join(str(n) for n in range(1, 202)))
    assert ids["schema"]["items"]["maxLength"] >= len(",".join([str(INT_MAX)] * 200))
    assert list(operation["requestBody"]["content"]) == ["application/json"]
    assert operation["requestBody"]["required"] is True
    assert quantity["type"] == "integer"
    assert quantity["not"] == {"const": 0}
    assert (quantity["minimum"], quantity["maximum"]) == (-10_000, 10_000)
    set_quantity = document["components"]["schemas"]["SetQuantityBody"]["properties"]["quantity"]
    assert (set_quantity["minimum"], set_quantity["maximum"]) == (0, 10_000)


@pytest.mark.parametrize("operation", CHECKED_BY_THE_SERVICE)
def test_valid_generated_inputs_reach_the_logic_instead_of_being_refused(
    service_schema: Any, operation: str
) -> None:
    found = service_schema.find_operation_by_label(operation)
    answers: list[tuple[int, str]] = []

    @seed(FUZZ_SEED)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=found.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def call(case: Any) -> None:
        response = case.call()
        answers.append((response.status_code, response.text))

    call()

    # A marketplace id that is not in the database is refused after a look-up, as an unknown
    # variation is answered 404: the input reached the logic; the data decided.
    refused = [
        answer
        for answer in answers
        if answer[0] in (400, 422) and "does not exist" not in answer[1]
    ]
    assert any(200 <= status < 300 for status, _ in answers), answers
    assert len(refused) <= MOST_VALID_INPUTS_REFUSED * len(answers), refused
