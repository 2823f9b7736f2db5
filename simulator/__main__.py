"""`python -m simulator --port 9000 --listings 5000`: a local Back Market stand-in.

``--kind refurbed`` serves the Refurbed stand-in instead, with the same options
(see ``simulator.refurbed.__main__``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simulator.config import SimulatorConfig
from simulator.server import run

SIMULATOR_KINDS = ("backmarket", "refurbed")


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="simulator",
        description="Serve a local stand-in for Back Market's listings API.",
    )
    # Read by main() before this parser; listed here for --help.
    parser.add_argument("--kind", choices=SIMULATOR_KINDS, default="backmarket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--listings", type=int, default=defaults.listings)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument(
        "--requests-per-10s",
        type=int,
        default=defaults.requests_per_10s,
        help="Cloudflare-like limit per client; omit for none",
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


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        listings=args.listings,
        seed=args.seed,
        token=args.token,
        latency_ms=args.latency_ms,
        requests_per_10s=args.requests_per_10s,
        fault_rate=args.fault_rate,
    )


def main(argv: Sequence[str] | None = None) -> None:
    kind_parser = argparse.ArgumentParser(add_help=False)
    kind_parser.add_argument("--kind", choices=SIMULATOR_KINDS, default="backmarket")
    chosen, rest = kind_parser.parse_known_args(argv)
    if chosen.kind == "refurbed":
        from simulator.refurbed.__main__ import main as refurbed_main

        refurbed_main(rest)
        return
    parser = build_parser()
    args = parser.parse_args(rest)
    try:
        config = config_from_args(args)
    except ValueError as invalid:
        parser.error(str(invalid))
    run(config, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
