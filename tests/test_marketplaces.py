"""Several marketplaces: the MARKETPLACE_<ID>_* configuration, the registry, and accounts side by
side, each with its own request budget."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from app.config import ConfigurationError, load_settings
from app.logs import SecretRedactor
from app.services.marketplace import (
    ListingRef,
    Marketplace,
    MarketplaceNotConfigured,
    MarketplaceRegistry,
    RateLimited,
)
from app.wiring import build_marketplace

TOKEN = "refurbed-secret-token-1234"


def test_marketplace_1_is_back_market_and_others_get_their_kinds_defaults() -> None:
    settings = load_settings(
        {
            "BACKMARKET_TOKEN": "bm-token-0001",
            "MARKETPLACE_4_KIND": "refurbed",
            "MARKETPLACE_4_TOKEN": TOKEN,
            "MARKETPLACE_7_KIND": "backmarket",
            "MARKETPLACE_7_TOKEN": "bm-us-token-7",
            "MARKETPLACE_7_BASE_URL": "https://www.backmarket.com/",
            "MARKETPLACE_7_MARKETS": "en-US",
            "MARKETPLACE_7_REQUESTS_PER_10S": "5",
        }
    )

    first, refurbed, us = settings.marketplace_settings()

    assert (first.id, first.kind, first.base_url) == (1, "backmarket", "https://www.backmarket.fr")
    assert (refurbed.id, refurbed.kind, refurbed.name) == (4, "refurbed", "Refurbed")
    assert (refurbed.base_url, refurbed.requests_per_10s, refurbed.updates_per_hour) == (
        "https://api.refurbed.com",
        20,
        2000,
    )
    assert (us.name, us.base_url, us.markets, us.requests_per_10s) == (
        "BackMarket 7",
        "https://www.backmarket.com",
        ("en-us",),
        5,
    )
    assert us.user_agent == settings.backmarket_user_agent


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"MARKETPLACE_4_KIND": "ebay", "MARKETPLACE_4_TOKEN": "t"}, "MARKETPLACE_4_KIND"),
        ({"MARKETPLACE_4_TOKEN": "t"}, "MARKETPLACE_4_KIND"),
        ({"MARKETPLACE_4_KIND": "refurbed"}, "MARKETPLACE_4_TOKEN"),
        ({"MARKETPLACE_1_KIND": "refurbed"}, "MARKETPLACE_1_KIND"),
        ({"MARKETPLACE_X_KIND": "refurbed"}, "MARKETPLACE_X_*"),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_BASE_URL": "ftp://x",
            },
            "MARKETPLACE_4_BASE_URL",
        ),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_REQUESTS_PER_10S": "0",
            },
            "MARKETPLACE_4_REQUESTS_PER_10S",
        ),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_UPDATES_PER_HOUR": "x",
            },
            "MARKETPLACE_4_UPDATES_PER_HOUR",
        ),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_MARKETS": "fr-fr",
            },
            "MARKETPLACE_4_MARKETS",
        ),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_USER_AGENT": "x",
            },
            "MARKETPLACE_4_USER_AGENT",
        ),
        (
            {
                "MARKETPLACE_7_KIND": "backmarket",
                "MARKETPLACE_7_TOKEN": "t",
                "MARKETPLACE_7_MARKETS": "french",
            },
            "MARKETPLACE_7_MARKETS",
        ),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_NAME": "",
            },
            "MARKETPLACE_4_NAME",
        ),
        (
            {
                "MARKETPLACE_4_KIND": "refurbed",
                "MARKETPLACE_4_TOKEN": "t",
                "MARKETPLACE_4_COLOUR": "x",
            },
            "MARKETPLACE_4_COLOUR",
        ),
    ],
)
def test_an_invalid_marketplace_variable_is_named_at_start_up(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ)

    assert f"{variable}:" in str(raised.value)


def test_every_marketplace_token_is_redacted_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        {"MARKETPLACE_4_KIND": "refurbed", "MARKETPLACE_4_TOKEN": TOKEN},
        backmarket_token="bm-token-0001",
    )
    redactor = SecretRedactor.from_settings(settings)

    line = redactor.redact(f"sent with {TOKEN} and bm-token-0001; header Plain abcdefgh123")

    assert TOKEN not in line and "bm-token-0001" not in line and "abcdefgh123" not in line
    assert line.count("[redacted]") == 3


def _adapters(**transports: httpx.MockTransport) -> dict[int, Marketplace]:
    settings = load_settings(
        {
            "MARKETPLACE_7_KIND": "backmarket",
            "MARKETPLACE_7_TOKEN": "bm-us-token-7",
            "MARKETPLACE_7_BASE_URL": "http://bm-us.test",
        },
        backmarket_base_url="http://bm-fr.test",
        backmarket_token="bm-fr-token-1",
    )
    adapters: dict[int, Marketplace] = {}
    for config in settings.marketplace_settings():
        transport = transports[f"m{config.id}"]
        http = httpx.AsyncClient(base_url=config.base_url, transport=transport)
        adapters[config.id] = build_marketplace(config, http=http)
    return adapters


def _listing_body(quantity: int) -> dict[str, Any]:
    return {"id": "00000000-0000-4000-8000-000000000001", "listing_id": 1, "quantity": quantity}


async def test_registry_answers_each_configured_marketplace_and_422_for_any_other() -> None:
    ok = httpx.MockTransport(lambda request: httpx.Response(200, json=_listing_body(3)))
    adapters = _adapters(m1=ok, m7=ok)
    registry = MarketplaceRegistry(adapters.values())

    assert registry.ids == [1, 7]
    assert registry.get(7) is adapters[7]
    with pytest.raises(MarketplaceNotConfigured) as raised:
        registry.get(4)
    assert raised.value.status_code == 422
    assert "MARKETPLACE_4_KIND" in raised.value.detail
    with pytest.raises(ValueError, match="configured twice"):
        MarketplaceRegistry([adapters[1], adapters[1]])
    await registry.aclose()


async def test_two_back_market_accounts_each_have_their_own_budget_and_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Account 7 answers 429 to everything: its budget pauses, account 1's does not, and a live
    read of account 1 goes out at once while account 7 is paused."""
    seen: dict[str, list[str]] = {"m1": [], "m7": []}

    def fr(request: httpx.Request) -> httpx.Response:
        seen["m1"].append(request.headers["Authorization"])
        return httpx.Response(200, json=_listing_body(5))

    def us(request: httpx.Request) -> httpx.Response:
        seen["m7"].append(request.headers["Authorization"])
        return httpx.Response(429, headers={"Retry-After": "120"}, json={"error": "slow down"})

    adapters = _adapters(m1=httpx.MockTransport(fr), m7=httpx.MockTransport(us))
    registry = MarketplaceRegistry(adapters.values())
    ref = ListingRef(reference="00000000-0000-4000-8000-000000000001")

    with caplog.at_level(logging.WARNING):
        with pytest.raises(RateLimited):
            await registry.get(7).get_listing(ref)
    assert registry.get(7).paused_for() > 100

    # Bounded so that a shared budget (waiting out account 7's 120 s pause) fails the test.
    listing = await asyncio.wait_for(registry.get(1).get_listing(ref), timeout=5)

    assert listing.quantity == 5
    assert registry.get(1).paused_for() == 0
    assert seen["m1"] == ["Basic bm-fr-token-1"]
    assert seen["m7"] and set(seen["m7"]) == {"Basic bm-us-token-7"}
    await registry.aclose()
