"""Demo data for `stock-sync serve --demo`: a Refurbed simulator whose offers share SKUs
with the Back Market simulator's listings, so variations match on both marketplaces.

Demo data, not production code: the service itself never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.testing import RunningRefurbedSimulator

# Fewer offers than the Back Market demo's 500 listings: some variations sell on Back
# Market only.
DEMO_OFFERS = 400
# Offers whose SKU no variation has (shows unknown offers on Refurbed).
REFURBED_ONLY_OFFERS = 5
REFURBED_ONLY_PREFIX = "RFB-ONLY-"


def demo_offer_skus(
    count: int = DEMO_OFFERS, *, refurbed_only: int = REFURBED_ONLY_OFFERS
) -> list[str]:
    """The Back Market simulator's first ``count`` SKUs (``SKU-0000001``...), then
    ``refurbed_only`` SKUs of its own (``RFB-ONLY-001``...)."""
    return [f"SKU-{index + 1:07d}" for index in range(count)] + [
        f"{REFURBED_ONLY_PREFIX}{index + 1:03d}" for index in range(refurbed_only)
    ]


@contextmanager
def running_demo_refurbed_simulator(
    skus: Sequence[str] | None = None,
) -> Iterator[RunningRefurbedSimulator]:
    """A Refurbed simulator on a free port with one offer per SKU, in the order given
    (default ``demo_offer_skus()``); stock, state and prices come from seed 42."""
    offer_skus = list(skus) if skus is not None else demo_offer_skus()
    # A little latency and a limit with its headers make the demo behave like the real thing.
    config = RefurbedSimulatorConfig(
        offers=len(offer_skus), seed=42, latency_ms=20, requests_per_window=200
    )
    with RunningRefurbedSimulator(config, skus=offer_skus, log_level="warning") as simulator:
        yield simulator
