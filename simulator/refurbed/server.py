"""Serve the Refurbed simulator on a port until interrupted."""

from __future__ import annotations

import uvicorn

from simulator.refurbed.app import create_refurbed_simulator_app
from simulator.refurbed.config import RefurbedSimulatorConfig


def run(
    config: RefurbedSimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 9100,
    *,
    log_level: str = "info",
) -> None:
    """Block serving ``config``'s simulator on ``host:port``."""
    uvicorn.run(create_refurbed_simulator_app(config), host=host, port=port, log_level=log_level)
