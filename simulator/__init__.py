"""A local stand-in for Back Market's seller API (listings), for tests and benchmarks.

Not part of the service: nothing under app/ imports it.
"""

from simulator.app import create_simulator_app
from simulator.config import EU_MARKETS, SimulatorConfig
from simulator.state import FaultKind, Hold, SimulatorState, UnknownListingError

__all__ = [
    "EU_MARKETS",
    "FaultKind",
    "Hold",
    "SimulatorConfig",
    "SimulatorState",
    "UnknownListingError",
    "create_simulator_app",
]
