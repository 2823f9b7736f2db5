"""6. Refresh overhead: what `GET /variations/{id}/quantity` adds on top of Back Market's own
latency, with 20 concurrent clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.catalogue import backmarket_headers
from bench.harness import BenchContext, Stack, stack
from bench.results import ScenarioResult, Table, Target
from bench.stats import median, percentile

LATENCY_MS = 20.0
CATALOGUE = 1_000
CLIENTS = 20
FULL_PER_CLIENT = 50
SMOKE_PER_CLIENT = 5
TARGET_P50_MS = 5.0

# Sends one request for a variation; True when the answer is right (200, the true stock).
Request = Callable[[int], Awaitable[bool]]


async def load(
    request: Request, *, clients: int, per_client: int, catalogue: int
) -> tuple[list[float], int]:
    """`clients` loops, each sending `per_client` requests one after another.

    Returns the latencies (s) and how many answers were wrong.
    """
    latencies: list[float] = []
    wrong = 0

    async def client(number: int) -> None:
        nonlocal wrong
        for k in range(per_client):
            variation_id = 1 + (number + k * clients) % catalogue
            started = time.perf_counter()
            right = await request(variation_id)
            latencies.append(time.perf_counter() - started)
            wrong += not right

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, wrong


def through_service(s: Stack) -> Request:
    quantity_of = {e.variation_id: e.quantity for e in s.catalogue}

    async def request(variation_id: int) -> bool:
        response = await s.quantity(variation_id)
        return (
            response.status_code == 200
            and response.json().get("quantity") == quantity_of[variation_id]
        )

    return request


def straight_to_simulator(s: Stack, http: httpx.AsyncClient) -> Request:
    uuid_of = {e.variation_id: e.uuid for e in s.catalogue}
    headers = backmarket_headers()

    async def request(variation_id: int) -> bool:
        response = await http.get(f"/ws/listings/{uuid_of[variation_id]}", headers=headers)
        return response.status_code == 200

    return request


async def run(context: BenchContext) -> ScenarioResult:
    options = context.options
    per_client = SMOKE_PER_CLIENT if options.smoke else FULL_PER_CLIENT
    repeats = options.repeats()
    backend = context.main_backend
    result = ScenarioResult(
        number=6,
        title="Refresh overhead",
        setup=(
            f"{CLIENTS} concurrent clients, each sending {per_client} `GET /variations/{{id}}/"
            f"quantity?refresh=true` one after another over distinct variations; simulator "
            f"latency {LATENCY_MS:.0f} ms, no rate limit. Database: {backend}. Overhead = "
            f"latency - {LATENCY_MS:.0f} ms (the simulator's configured latency). For reference, "
            "the same load sent straight to the simulator (`GET /ws/listings/{id}`) in the same "
            "run: the part of the latency that is the simulator's and the harness's own."
        ),
    )
    service_p50, service_p99, direct_p50, direct_p99 = [], [], [], []
    catalogue = max(CATALOGUE, CLIENTS * per_client)
    async with stack(
        context,
        name="s6",
        listings=catalogue,
        backend=backend,
        latency_ms=LATENCY_MS,
        concurrency=CLIENTS,
    ) as s:
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=s.simulator.base_url, limits=limits) as sim_http:
            direct = straight_to_simulator(s, sim_http)
            service = through_service(s)
            # Warm-up: connections opened, code paths and caches warm on both sides.
            await load(service, clients=CLIENTS, per_client=2, catalogue=catalogue)
            await load(direct, clients=CLIENTS, per_client=2, catalogue=catalogue)
            for rep in range(repeats):
                served, wrong = await load(
                    service, clients=CLIENTS, per_client=per_client, catalogue=catalogue
                )
                straight, failed = await load(
                    direct, clients=CLIENTS, per_client=per_client, catalogue=catalogue
                )
                result.check(
                    "every refresh answered 200 with the simulator's stock", wrong == 0, f"{wrong}"
                )
                result.check("every direct read answered 200", failed == 0, f"{failed}")
                service_p50.append(percentile(served, 0.5))
                service_p99.append(percentile(served, 0.99))
                direct_p50.append(percentile(straight, 0.5))
                direct_p99.append(percentile(straight, 0.99))
                context.log(
                    f"  refresh rep {rep + 1}/{repeats}: service p50 "
                    f"{service_p50[-1] * 1000:.1f} ms p99 {service_p99[-1] * 1000:.1f} ms; "
                    f"direct p50 {direct_p50[-1] * 1000:.1f} ms"
                )
    latency_s = LATENCY_MS / 1000
    figures: dict[str, Any] = {
        "clients": CLIENTS,
        "requests": CLIENTS * per_client,
        "p50_ms": median(service_p50) * 1000,
        "p99_ms": median(service_p99) * 1000,
        "overhead_p50_ms": (median(service_p50) - latency_s) * 1000,
        "overhead_p99_ms": (median(service_p99) - latency_s) * 1000,
        "direct_p50_ms": median(direct_p50) * 1000,
        "direct_p99_ms": median(direct_p99) * 1000,
        "raw": {
            "service_p50": service_p50,
            "service_p99": service_p99,
            "direct_p50": direct_p50,
            "direct_p99": direct_p99,
        },
    }
    result.data = figures
    result.tables.append(
        Table(
            columns=["", "p50 (ms)", "p99 (ms)"],
            rows=[
                ["service, total", f"{figures['p50_ms']:.1f}", f"{figures['p99_ms']:.1f}"],
                [
                    f"service overhead (total - {LATENCY_MS:.0f} ms)",
                    f"{figures['overhead_p50_ms']:.1f}",
                    f"{figures['overhead_p99_ms']:.1f}",
                ],
                [
                    "straight to the simulator",
                    f"{figures['direct_p50_ms']:.1f}",
                    f"{figures['direct_p99_ms']:.1f}",
                ],
                [
                    "service - straight (p50 to p50, p99 to p99)",
                    f"{figures['p50_ms'] - figures['direct_p50_ms']:.1f}",
                    f"{figures['p99_ms'] - figures['direct_p99_ms']:.1f}",
                ],
            ],
        )
    )
    result.targets.append(
        Target(
            goal=f"p50 overhead < {TARGET_P50_MS:.0f} ms",
            measured=f"{figures['overhead_p50_ms']:.1f} ms",
            met=None if options.smoke else figures["overhead_p50_ms"] < TARGET_P50_MS,
        )
    )
    return result
