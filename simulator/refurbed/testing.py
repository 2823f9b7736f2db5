"""Run the Refurbed simulator on a real socket for tests that need a URL, not an ASGI app.

    with RunningRefurbedSimulator(RefurbedSimulatorConfig(offers=200)) as sim:
        httpx.post(f"{sim.base_url}/refb.merchant.v1.OfferService/GetOffer",
                   json={"identifier": {"sku": "SKU-0000001"}},
                   headers={"Authorization": f"Plain {sim.config.token}"})
        sim.state.set_stock("SKU-0000001", 3)
        sim.place_order([("SKU-0000001", 1)])   # a released order; stock drops by 1

``async with`` works too. For in-process tests without a socket, mount the app:
``httpx.AsyncClient(transport=httpx.ASGITransport(app=create_refurbed_simulator_app(cfg)),
base_url="http://refurbed.test")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from simulator.refurbed.app import create_refurbed_simulator_app
from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.state import OfferRef, RefurbedSimulatorState
from simulator.testing import ServedApp


class RunningRefurbedSimulator(ServedApp):
    """The Refurbed simulator served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        config: RefurbedSimulatorConfig | None = None,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        skus: Sequence[str] | None = None,
        log_level: str = "warning",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.config = config or RefurbedSimulatorConfig()
        app = create_refurbed_simulator_app(self.config, wall_clock=wall_clock, skus=skus)
        self.state: RefurbedSimulatorState = app.state.sim
        super().__init__(
            app,
            wake=self.state.wake_everything,
            log_level=log_level,
            startup_timeout_s=startup_timeout_s,
        )

    def place_order(self, lines: Sequence[tuple[OfferRef, int]]) -> dict[str, Any]:
        """A released order, one item per unit; each offer's stock drops at once."""
        return self.state.place_order(lines)
