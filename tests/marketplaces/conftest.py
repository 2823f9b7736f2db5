"""`marketplace`: the behaviour suite's fixture, one run per adapter of `harness.ADAPTERS`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.marketplaces.harness import ADAPTERS, AdapterUnderTest

CATALOGUE_SIZE = 250


@pytest.fixture(params=sorted(ADAPTERS))
async def marketplace(request: pytest.FixtureRequest) -> AsyncIterator[AdapterUnderTest]:
    under_test = ADAPTERS[request.param](catalogue_size=CATALOGUE_SIZE)
    try:
        yield under_test
    finally:
        await under_test.adapter.aclose()
        await under_test.aclose()
