"""`python -m bench`: run the scenarios, then write BENCHMARKS.md, latest.json and the plot."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.db import create_engine
from bench.harness import BenchContext, BenchOptions
from bench.machine import Machine, describe_machine
from bench.plot import can_plot, plot_sync_scaling
from bench.processes import REPO_ROOT
from bench.report import load_previous, render_markdown, write_json
from bench.results import ScenarioResult
from bench.scenarios import SCENARIOS

DEFAULT_MYSQL_URL = "mysql+aiomysql://root@127.0.0.1:3306/"
SMOKE_OUT = REPO_ROOT / "bench" / "results" / "tmp" / "smoke"


@dataclass(frozen=True)
class OutputPaths:
    markdown: Path
    json: Path
    plot: Path

    @classmethod
    def under(cls, out: Path | None) -> OutputPaths:
        if out is None:
            return cls(
                markdown=REPO_ROOT / "BENCHMARKS.md",
                json=REPO_ROOT / "bench" / "results" / "latest.json",
                plot=REPO_ROOT / "bench" / "results" / "sync_scaling.png",
            )
        return cls(
            markdown=out / "BENCHMARKS.md",
            json=out / "results" / "latest.json",
            plot=out / "results" / "sync_scaling.png",
        )


def sizes(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks (issues 6, 10 and 11) and write BENCHMARKS.md.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes of every scenario, 1 run each: checks correctness, not speed "
        f"(writes under {SMOKE_OUT.relative_to(REPO_ROOT)} unless --out is given)",
    )
    parser.add_argument(
        "--scenario",
        type=int,
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); the others' previous results are kept",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median); 3")
    parser.add_argument(
        "--slow-repeat",
        type=int,
        default=1,
        help="runs of the multi-minute measurements (per-item above 5k listings, the seed "
        "app's way at 20k, 1M listings); 1",
    )
    parser.add_argument(
        "--sizes",
        type=sizes,
        help="catalogue sizes, e.g. 1000,5000 (scenarios with one size use the first)",
    )
    parser.add_argument(
        "--million", action="store_true", help="scenario 3 also at 1M listings on MariaDB"
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("BENCH_MYSQL_URL")
        or os.environ.get("TEST_MYSQL_URL")
        or DEFAULT_MYSQL_URL,
        help="MariaDB server (a user that may create databases); default $BENCH_MYSQL_URL, "
        f"$TEST_MYSQL_URL or {DEFAULT_MYSQL_URL}",
    )
    parser.add_argument("--no-mysql", action="store_true", help="SQLite only")
    parser.add_argument("--out", type=Path, help="write BENCHMARKS.md and results/ here instead")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and SQLite files")
    return parser


async def reachable_mysql(url: str) -> str | None:
    """The server URL (no database) when MariaDB answers, else None."""
    server = make_url(url).set(database=None).render_as_string(hide_password=False)
    engine = create_engine(server, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means "not usable here"
        print(f"MariaDB at {make_url(url).render_as_string()} not usable ({exc}); SQLite only.")
        return None
    finally:
        await engine.dispose()
    return server


async def run_scenario(number: int, context: BenchContext, machine: Machine) -> ScenarioResult:
    title, scenario = SCENARIOS[number]
    context.log(f"\n== scenario {number}: {title}")
    started = time.perf_counter()
    try:
        result = await scenario(context)
    except Exception:
        result = ScenarioResult(number=number, title=title, setup="", error=traceback.format_exc())
        context.log(result.error or "")
    elapsed = time.perf_counter() - started
    result.measured_at, result.commit = machine.measured_at, machine.commit
    result.data["scenario_seconds"] = elapsed
    failed = result.failed_checks
    verdict = "ERROR" if result.error else ("FAILED CHECKS" if failed else "ok")
    context.log(f"== scenario {number}: {verdict} in {elapsed:.1f} s")
    for check in failed:
        context.log(f"   FAILED: {check.condition} ({check.detail})")
    for target in result.targets:
        context.log(f"   target: {target.goal}: {target.measured} ({target.met})")
    return result


def write_outputs(
    paths: OutputPaths,
    *,
    machine: Machine,
    options: BenchOptions,
    results: dict[int, ScenarioResult],
    argv: Sequence[str],
) -> None:
    merged = {**load_previous(paths.json), **results}
    first = merged.get(1)
    if 1 in results and first is not None and first.data.get("points"):
        if can_plot():
            plot_sync_scaling(
                first.data["points"],
                paths.plot,
                subtitle=f"{machine.cpu_model}, {machine.cores} cores",
            )
        else:
            print(
                "matplotlib is not installed: sync_scaling.png not drawn (pip install matplotlib)"
            )
    write_json(
        paths.json,
        machine=machine,
        options={
            "argv": list(argv),
            "repeat": options.repeat,
            "slow_repeat": options.slow_repeat,
            "smoke": options.smoke,
        },
        results=merged,
    )
    command = "python -m bench" + ("" if not argv else " " + shlex.join(argv))
    paths.markdown.parent.mkdir(parents=True, exist_ok=True)
    paths.markdown.write_text(
        render_markdown(
            machine=machine,
            results=merged,
            command=command,
            repeat=1 if options.smoke else options.repeat,
            markdown_path=paths.markdown,
            plot_path=paths.plot,
            json_path=paths.json,
        )
    )


async def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    mysql_server = None if args.no_mysql else await reachable_mysql(args.mysql_url)
    workdir = Path(tempfile.mkdtemp(prefix="stock-sync-bench-"))
    options = BenchOptions(
        scenarios=sorted(set(args.scenario or SCENARIOS)),
        repeat=max(1, args.repeat),
        slow_repeat=max(1, args.slow_repeat),
        smoke=args.smoke,
        sizes=args.sizes,
        million=args.million,
        mysql_server_url=mysql_server,
        workdir=workdir,
    )
    context = BenchContext(options=options, log=lambda line: print(line, flush=True))
    machine = await describe_machine(repo=REPO_ROOT, mysql_server_url=mysql_server)
    context.log(
        f"stock-sync benchmarks: {machine.cpu_model}, {machine.cores} cores, "
        f"{machine.ram_gib} GiB; databases: {', '.join(context.backends())}; work dir {workdir}"
    )
    results: dict[int, ScenarioResult] = {}
    for number in options.scenarios:
        results[number] = await run_scenario(number, context, machine)
    out = args.out if args.out is not None else (SMOKE_OUT if args.smoke else None)
    paths = OutputPaths.under(out)
    write_outputs(paths, machine=machine, options=options, results=results, argv=argv)
    ok = all(result.ok for result in results.values())
    context.log(f"\nwrote {paths.markdown}, {paths.json}")
    if ok and not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        context.log(f"logs and databases kept in {workdir}")
    context.log("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    return asyncio.run(run(args, arguments))
