"""A local stand-in for Refurbed's merchant API (offers, orders), for tests and benchmarks.

Built from shared/refurbed's Swagger document and FACTS.md. Not part of the service:
nothing under app/ imports it.
"""

from simulator.refurbed.app import create_refurbed_simulator_app
from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.orders import OrderConflict, UnknownOrderError
from simulator.refurbed.responses import Code
from simulator.refurbed.state import FaultKind, RefurbedSimulatorState, UnknownOfferError

__all__ = [
    "Code",
    "FaultKind",
    "OrderConflict",
    "RefurbedSimulatorConfig",
    "RefurbedSimulatorState",
    "UnknownOfferError",
    "UnknownOrderError",
    "create_refurbed_simulator_app",
]
