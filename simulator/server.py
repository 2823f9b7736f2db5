"""Serve the simulator on a port until interrupted (the `stock-sync simulator` command)."""

from __future__ import annotations

import uvicorn

from simulator.app import create_simulator_app
from simulator.config import SimulatorConfig


def run(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 9000,
    *,
    log_level: str = "info",
) -> None:
    """Block serving ``config``'s simulator on ``host:port``."""
    uvicorn.run(
        create_simulator_app(config),
        host=host,
        port=port,
        log_level=log_level,
        # The edge answers as "server: cloudflare", like the real platform.
        server_header=False,
    )
