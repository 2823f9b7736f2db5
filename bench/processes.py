"""The simulator and the service, each in a subprocess of its own, like in production.

A subprocess of its own gives the service its own interpreter (no GIL shared with the
load generator) and a peak RSS that can be read from /proc/<pid>/status (VmHWM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
SIM_TOKEN = "sim-token"
# The documented BM-{Company}-{Integration};{email} form, which the simulator checks.
USER_AGENT = "BM-Bench-StockSync;bench@example.com"
STARTUP_TIMEOUT_S = 120.0


class ProcessFailed(RuntimeError):
    """A subprocess exited or never became ready; the message points at its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def read_status_kib(pid: int, field: str) -> int | None:
    """A `field:  N kB` line of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def peak_rss_mib(self) -> float | None:
        kib = read_status_kib(self.pid, "VmHWM")
        return None if kib is None else kib / 1024

    def rss_mib(self) -> float | None:
        kib = read_status_kib(self.pid, "VmRSS")
        return None if kib is None else kib / 1024

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ProcessFailed(
                f"{self.name} exited with {code}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    ready_path: ClassVar[str] = "/"

    async def wait_ready(self, *, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        path = self.ready_path
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
            while True:
                self.check_alive()
                try:
                    if (await http.get(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ProcessFailed(
                        f"{self.name} not ready after {timeout_s:.0f}s; see {self.log_path}"
                    )
                await asyncio.sleep(0.05)

    def interrupt(self) -> None:
        """Ask the process to shut down (uvicorn finishes its requests first)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)

    def stop(self, *, grace_s: float = 15.0) -> None:
        self.interrupt()
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


def stop_all(processes: list[ManagedProcess]) -> None:
    """Interrupt every process first, then wait for each: they shut down side by side."""
    for process in processes:
        process.interrupt()
    for process in processes:
        process.stop()


def _spawn(
    name: str, args: list[str], *, env: Mapping[str, str], log_path: Path, quiet_stdout: bool
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            # uvicorn writes its access log (one line a request) to stdout: costly and useless.
            stdout=subprocess.DEVNULL if quiet_stdout else log,
            stderr=log,
        )
    finally:
        log.close()


@dataclass(frozen=True)
class SimulatorOptions:
    listings: int
    latency_ms: float = 0.0
    requests_per_10s: int | None = None
    seed: int = 42
    # "refurbed": the Refurbed stand-in (`python -m simulator --kind refurbed`); `listings`
    # is then its offers.
    kind: str = "backmarket"


@dataclass
class Simulator(ManagedProcess):
    """`python -m simulator` plus its /_sim control API."""

    options: SimulatorOptions
    ready_path: ClassVar[str] = "/_sim/config"

    async def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30.0) as http:
            response = await http.request(method, f"/_sim{path}", **kwargs)
            response.raise_for_status()
            return response.json() if response.content else None

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._control("GET", "/stats")
        return stats

    async def reset_stats(self) -> None:
        await self._control("POST", "/stats/reset")

    async def quantity(self, ref: str | int) -> int:
        body = await self._control("GET", f"/listings/{ref}/quantity")
        return int(body["quantity"])

    async def place_order(self, ref: str | int, *, units: int) -> int:
        """A customer order of `units` of one listing, paid; the listing's quantity left."""
        body = await self._control("POST", f"/listings/{ref}/orders", json={"units": units})
        return int(body["quantity"])


def spawn_simulator(options: SimulatorOptions, *, logs: Path) -> Simulator:
    """Start `python -m simulator`; `await simulator.wait_ready()` before using it."""
    port = free_port()
    args = [
        "-m",
        "simulator",
        "--kind",
        options.kind,
        "--port",
        str(port),
        "--listings",
        str(options.listings),
        "--latency-ms",
        str(options.latency_ms),
        "--seed",
        str(options.seed),
    ]
    if options.requests_per_10s is not None:
        args += ["--requests-per-10s", str(options.requests_per_10s)]
    log_path = logs / f"simulator-{port}.log"
    popen = _spawn("simulator", args, env={}, log_path=log_path, quiet_stdout=True)
    return Simulator("simulator", popen, f"http://127.0.0.1:{port}", log_path, options)


@dataclass(frozen=True)
class ServiceOptions:
    database_url: str
    backmarket_base_url: str
    requests_per_10s: int = 20
    updates_per_hour: int = 2000
    extra_env: tuple[tuple[str, str], ...] = ()

    def environment(self) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.database_url,
            "BACKMARKET_BASE_URL": self.backmarket_base_url,
            "BACKMARKET_TOKEN": SIM_TOKEN,
            "BACKMARKET_USER_AGENT": USER_AGENT,
            "BACKMARKET_MARKETS": "fr-fr",
            "BACKMARKET_REQUESTS_PER_10S": str(self.requests_per_10s),
            "BACKMARKET_UPDATES_PER_HOUR": str(self.updates_per_hour),
            "SYNC_INTERVAL_MINUTES": "0",
            "API_KEYS": "",
            # The harness migrated the database before seeding it.
            "RUN_MIGRATIONS_ON_STARTUP": "false",
        }
        env.update(dict(self.extra_env))
        return env


class Service(ManagedProcess):
    """`python -m uvicorn app.main:app`, configured through the environment only."""

    ready_path: ClassVar[str] = "/readyz"


def spawn_service(options: ServiceOptions, *, logs: Path) -> Service:
    """Start the service; `await service.wait_ready()` before using it."""
    port = free_port()
    args = [
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    log_path = logs / f"service-{port}.log"
    env = options.environment()
    popen = _spawn("service", args, env=env, log_path=log_path, quiet_stdout=False)
    return Service("service", popen, f"http://127.0.0.1:{port}", log_path)
