"""Knobs of the Back Market stand-in.

Defaults reproduce the documented behaviour of the EU platform (see
shared/backmarket/FACTS.md); every behaviour known only from client code is a
switch here so a test can exercise both variants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

# The EU platform's markets, as Accept-Language values. FACTS.md lists 13 codes while
# the seed app fetched 14 countries; the spec's MarketCode enum has FI as the 14th
# EU country, hence fi-fi.
EU_MARKETS: tuple[str, ...] = (
    "fr-fr",
    "de-de",
    "es-es",
    "it-it",
    "en-gb",
    "fr-be",
    "de-at",
    "nl-nl",
    "pt-pt",
    "en-ie",
    "el-gr",
    "sk-sk",
    "sv-se",
    "fi-fi",
)

CURRENCY_BY_MARKET: dict[str, str] = {
    "en-gb": "GBP",
    "sv-se": "SEK",
    "en-us": "USD",
    "ja-jp": "JPY",
    "en-au": "AUD",
}
DEFAULT_CURRENCY = "EUR"

UpdateErrorBody = Literal["string", "error_v1"]


def currency_of(market: str) -> str:
    return CURRENCY_BY_MARKET.get(market, DEFAULT_CURRENCY)


@dataclass
class SimulatorConfig:
    listings: int = 1000
    seed: int = 42
    token: str = "sim-token"
    markets: tuple[str, ...] = EU_MARKETS
    # Market used when a request carries no Accept-Language header.
    default_market: str = "fr-fr"
    latency_ms: float = 0
    # Cloudflare-like limit per client address; None turns it off.
    requests_per_10s: int | None = None
    rate_limit_window_s: float = 10.0
    rate_limit_block_s: float = 10.0
    # Cloudflare documents no Retry-After; a client must cope without one.
    send_retry_after: bool = False
    fault_rate: float = 0.0
    # How long the "slow" fault delays an otherwise normal answer.
    slow_fault_s: float = 5.0
    # Cloudflare gives up on the origin after 100 s and answers 524.
    timeout_fault_s: float = 100.0
    orders_per_minute: float = 0
    max_page_size: int = 50
    default_page_size: int = 10
    market_coverage: float = 1.0
    # Real servers have been seen answering 202 to a listing update (clients).
    update_status_code: int = 200
    # The spec types the 400 of POST /ws/listings/{id} as a bare JSON string;
    # "error_v1" answers ErrorResponseV1 instead, like the other endpoints.
    update_error_body: UpdateErrorBody = "string"
    # When set, next/previous links use this scheme://host instead of the request's,
    # like a platform answering behind a proxy.
    public_base_url: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.listings < 0:
            raise ValueError("listings must be >= 0")
        if not self.markets:
            raise ValueError("markets must not be empty")
        if self.default_market not in self.markets:
            raise ValueError(f"default_market {self.default_market!r} is not in markets")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if not 0.0 <= self.market_coverage <= 1.0:
            raise ValueError("market_coverage must be within [0, 1]")
        if self.requests_per_10s is not None and self.requests_per_10s < 1:
            raise ValueError("requests_per_10s must be >= 1 or None")
        if self.max_page_size < 1 or self.default_page_size < 1:
            raise ValueError("page sizes must be >= 1")
        if self.latency_ms < 0 or self.orders_per_minute < 0:
            raise ValueError("latency_ms and orders_per_minute must be >= 0")
        if self.update_status_code not in (200, 202):
            raise ValueError("update_status_code must be 200 or 202")
        if self.update_error_body not in ("string", "error_v1"):
            raise ValueError("update_error_body must be 'string' or 'error_v1'")

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, token left out like any credential."""
        values = dataclasses.asdict(self)
        values["markets"] = list(self.markets)
        del values["token"]
        return values
