"""Knobs of the Refurbed stand-in.

Defaults follow shared/refurbed/FACTS.md and the Swagger document; Refurbed publishes
no rate-limit numbers, so the limit is off unless a test or benchmark sets one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Int64Pagination: "Between 1 and 100. Default and maximum is 100."
MAX_PAGE_LIMIT = 100
# BatchGetOffers and BatchUpdateOffers: "Between 1 and 50."
MAX_BATCH_ENTRIES = 50


@dataclass
class RefurbedSimulatorConfig:
    offers: int = 1000
    seed: int = 42
    token: str = "sim-token"
    latency_ms: float = 0
    # Requests per fixed window and per token; None turns the limit (and its headers) off.
    requests_per_window: int | None = None
    rate_limit_window_s: float = 10.0
    fault_rate: float = 0.0
    # How long the "timeout" and "lost_timeout" faults stay silent before a 504:
    # longer than any sensible client timeout.
    timeout_fault_s: float = 100.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.offers < 0:
            raise ValueError("offers must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if self.requests_per_window is not None and self.requests_per_window < 1:
            raise ValueError("requests_per_window must be >= 1 or None")
        if self.rate_limit_window_s <= 0:
            raise ValueError("rate_limit_window_s must be > 0")
        if self.latency_ms < 0 or self.timeout_fault_s < 0:
            raise ValueError("latency_ms and timeout_fault_s must be >= 0")

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, token left out like any credential."""
        values = dataclasses.asdict(self)
        del values["token"]
        return values
