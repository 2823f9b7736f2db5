"""BENCHMARKS.md and latest.json from the scenarios' results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.machine import Machine
from bench.results import ScenarioResult, Table, Target

FINDINGS = Path(__file__).with_name("findings.md")

VERDICT = {True: "met", False: "**missed**", None: "not judged"}


def load_previous(json_path: Path) -> dict[int, ScenarioResult]:
    """Results of an earlier run, so that `--scenario N` replaces only scenario N."""
    try:
        raw = json.loads(json_path.read_text())
        return {int(n): ScenarioResult.from_dict(r) for n, r in raw.get("scenarios", {}).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_json(
    json_path: Path,
    *,
    machine: Machine,
    options: dict[str, Any],
    results: dict[int, ScenarioResult],
) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine.as_dict(),
        "options": options,
        "scenarios": {str(n): results[n].as_dict() for n in sorted(results)},
    }
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def markdown_table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table.rows]
    return [*lines, ""]


def target_line(target: Target) -> str:
    return f"- {target.goal}: {target.measured} — {VERDICT[target.met]}"


def scenario_section(result: ScenarioResult, *, plot: str | None) -> list[str]:
    lines = [f"## {result.number}. {result.title}", "", result.setup, ""]
    lines += [f"_Measured {result.measured_at}, commit {result.commit}._", ""]
    if result.error:
        lines += ["**The scenario failed:**", "", "```", result.error.strip(), "```", ""]
    for table in result.tables:
        lines += markdown_table(table)
    if result.targets:
        lines += ["Targets:", "", *[target_line(t) for t in result.targets], ""]
    failed = result.failed_checks
    passed = len(result.checks) - len(failed)
    lines.append(f"Correctness checks: {passed} of {len(result.checks)} passed.")
    lines += [f"- FAILED: {c.condition} ({c.detail})" for c in failed]
    lines.append("")
    if plot and result.number == 1:
        lines += [f"![Sync time and API calls vs catalogue size]({plot})", ""]
    lines += [f"Note: {note}" for note in result.notes]
    return [*lines, ""] if result.notes else lines


def machine_lines(machine: Machine) -> list[str]:
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {machine.cpu_model} |",
        f"| cores | {machine.cores} |",
        f"| RAM | {machine.ram_gib} GiB |",
        f"| OS | {machine.os} |",
        f"| Python | {machine.python} |",
        f"| MariaDB | {machine.mariadb or 'not used'} |",
        f"| SQLite | {machine.sqlite} |",
        f"| date | {machine.measured_at} |",
        f"| commit | {machine.commit} |",
        "",
    ]


def summary_lines(results: dict[int, ScenarioResult]) -> list[str]:
    lines = ["| scenario | target | measured | verdict |", "|---|---|---|---|"]
    for number in sorted(results):
        for target in results[number].targets:
            lines.append(
                f"| {number} | {target.goal} | {target.measured} | {VERDICT[target.met]} |"
            )
    return [*lines, ""]


def render_markdown(
    *,
    machine: Machine,
    results: dict[int, ScenarioResult],
    command: str,
    repeat: int,
    markdown_path: Path,
    plot_path: Path | None,
    json_path: Path,
) -> str:
    def relative(path: Path) -> str:
        return os.path.relpath(path, markdown_path.parent)

    plot = relative(plot_path) if plot_path is not None and plot_path.exists() else None
    lines = [
        "# Benchmarks",
        "",
        "Reproduce every figure with `python -m bench --million` (about an hour on this "
        "machine; `python -m bench` without the million-listing run, `--scenario N` for one "
        f"scenario). This file was last written by `{command}`; raw figures in "
        f"[`{relative(json_path)}`]({relative(json_path)}). "
        "Issue 6 sets scenarios 1-6 and their targets; issue 10 scenario 7 (fresh stock), "
        "issue 11 scenario 8 (load).",
        "",
        "How it measures:",
        "",
        "- The simulator (`python -m simulator`) and the service "
        "(`python -m uvicorn app.main:app`, configured through its environment, scheduler off) "
        "each run in a subprocess of their own; "
        "the harness drives the service over HTTP like a client would.",
        "- Each scenario gets a fresh database (SQLite file, or a MariaDB database `bench_<name>` "
        "created and dropped; `BENCH_DATABASE_PREFIX` replaces `bench_`), seeded in bulk with "
        "one variation per simulator listing before anything is timed.",
        (
            f"- Every figure is the median of {repeat} runs unless its table says otherwise; a "
            if repeat > 1
            else "- Smoke run: every figure comes from a single run at tiny sizes (no target is "
            "judged on it); a "
        )
        + "comparison is a ratio of figures measured in the same run, on the same machine.",
        "- Correctness is checked in every run (the CI smoke run included): call counts, stock "
        "equal to the simulator's, each addition applied once.",
        "",
        "## Machine",
        "",
        *machine_lines(machine),
        "## Targets",
        "",
        *summary_lines(results),
    ]
    if FINDINGS.exists():
        lines += ["## What was found", "", FINDINGS.read_text().strip(), ""]
    for number in sorted(results):
        lines += scenario_section(results[number], plot=plot)
    return "\n".join(lines).rstrip() + "\n"
