"""Run the simulator on a real socket for tests that need a URL, not an ASGI app.

    with RunningSimulator(SimulatorConfig(listings=200)) as sim:
        httpx.get(f"{sim.base_url}/ws/listings", headers=...)
        sim.state.set_quantity("SKU-0000001", 3)

``async with`` works too. Customer orders (shown by GET /ws/orders):

        placed = sim.place_order("SKU-0000001", 2, hidden=True)  # state 0, not listed
        sim.pay_order(placed.order_id)                           # state 1, listed
        sim.cancel_line(placed.order_id, placed.line_id)         # state 4, stock back

For in-process tests without a socket, mount the app:
``httpx.AsyncClient(transport=httpx.ASGITransport(app=create_simulator_app(cfg)),
base_url="http://bm.test")`` (the orders task then needs a LifespanManager).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import ASGIApp

from simulator.app import create_simulator_app
from simulator.config import SimulatorConfig
from simulator.orders import PlacedOrder
from simulator.state import ListingRef, SimulatorState


class ServedApp:
    """uvicorn serving an ASGI app on 127.0.0.1 in a background thread.

    ``wake`` is called before stopping: it must release whatever the app keeps parked
    (held requests, timeout faults), which would otherwise keep uvicorn waiting.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        wake: Callable[[], None],
        log_level: str = "warning",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.app = app
        self._wake = wake
        self._log_level = log_level
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the simulator is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already started")
        # Binding here, before the thread starts, gives a free port with no race.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level=self._log_level,
                access_log=False,
                server_header=False,
                # A plain asyncio loop: uvloop's policy would leak into the test's loops.
                loop="asyncio",
                lifespan="on",
                timeout_graceful_shutdown=2,
            )
        )
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [listener]},
            name=f"simulator-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        # Parked and sleeping requests would otherwise keep uvicorn waiting.
        self._wake()
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("the simulator did not stop within 10 s")
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # Starting blocks for a few milliseconds; keep the caller's loop responsive.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


class RunningSimulator(ServedApp):
    """The Back Market simulator served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        log_level: str = "warning",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.config = config or SimulatorConfig()
        app = create_simulator_app(self.config, clock=clock, wall_clock=wall_clock)
        self.state: SimulatorState = app.state.sim
        super().__init__(
            app,
            wake=self.state.wake_everything,
            log_level=log_level,
            startup_timeout_s=startup_timeout_s,
        )

    # -- customer orders: shortcuts to the state's methods, callable from any thread ----

    def place_order(self, ref: ListingRef, units: int = 1, *, hidden: bool = False) -> PlacedOrder:
        """A customer buys; stock drops now. ``hidden``: state 0, listed only once paid."""
        return self.state.place_order(ref, units, hidden=hidden)

    def pay_order(self, order_id: int) -> dict[str, Any]:
        """A hidden order's payment clears: state 1, date_modification now."""
        return self.state.pay_order(order_id)

    def cancel_line(self, order_id: int, line_id: int, state: int = 4) -> dict[str, Any]:
        """Cancel (4) or refund (5, 6) a line: its units go back once."""
        return self.state.cancel_line(order_id, line_id, state)

    def orders(self, *, include_hidden: bool = True) -> list[dict[str, Any]]:
        return self.state.orders(include_hidden=include_hidden)
