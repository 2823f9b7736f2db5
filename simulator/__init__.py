"""A local stand-in for Back Market's seller API (listings, orders), for tests and benchmarks.

Not part of the service: nothing under app/ imports it.
"""

from simulator.app import create_simulator_app
from simulator.config import EU_MARKETS, SimulatorConfig
from simulator.orders import OrderConflict, PlacedOrder, UnknownOrderError
from simulator.state import FaultKind, Hold, SimulatorState, UnknownListingError

__all__ = [
    "EU_MARKETS",
    "FaultKind",
    "Hold",
    "OrderConflict",
    "PlacedOrder",
    "SimulatorConfig",
    "SimulatorState",
    "UnknownListingError",
    "UnknownOrderError",
    "create_simulator_app",
]
