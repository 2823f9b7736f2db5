"""`python -m simulator.refurbed --port 9100 --listings 5000`: a local Refurbed stand-in.

Also reached as ``python -m simulator --kind refurbed``; ``main(argv)`` is what a
command line calls.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simulator.refurbed.config import RefurbedSimulatorConfig
from simulator.refurbed.server import run


def build_parser() -> argparse.ArgumentParser:
    defaults = RefurbedSimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="simulator --kind refurbed",
        description="Serve a local stand-in for Refurbed's merchant API (offers, orders).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--listings",
        "--offers",
        dest="offers",
        type=int,
        default=defaults.offers,
        help="offers in the catalogue",
    )
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument(
        "--requests-per-10s",
        type=int,
        default=None,
        help="requests per 10 s window and per token; omit for no limit (and no headers)",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=defaults.fault_rate,
        help="fraction of requests answered with a random fault (0..1)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--token", default=defaults.token)
    return parser


def config_from_args(args: argparse.Namespace) -> RefurbedSimulatorConfig:
    return RefurbedSimulatorConfig(
        offers=args.offers,
        seed=args.seed,
        token=args.token,
        latency_ms=args.latency_ms,
        requests_per_window=args.requests_per_10s,
        rate_limit_window_s=10.0,
        fault_rate=args.fault_rate,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as invalid:
        parser.error(str(invalid))
    run(config, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
