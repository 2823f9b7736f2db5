"""The benchmark harness at smoke size: every scenario (issues 6, 10, 11) runs, and its correctness
checks hold (call counts, stock equal to the simulator's, each addition applied once).

No timing is asserted here; the figures live in BENCHMARKS.md (`python -m bench`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.plot import can_plot

REPO = Path(__file__).resolve().parents[1]
SMOKE_TIMEOUT_S = 240


def test_bench_smoke_runs_every_scenario_and_its_checks_pass(tmp_path: Path) -> None:
    mysql_url = os.environ.get("TEST_MYSQL_URL")
    database_args = ["--mysql-url", mysql_url] if mysql_url else ["--no-mysql"]
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path), *database_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    report = (tmp_path / "BENCHMARKS.md").read_text()
    for number in range(1, 10):
        assert f"## {number}. " in report
    assert (tmp_path / "results" / "latest.json").is_file()
    if can_plot():
        assert (tmp_path / "results" / "sync_scaling.png").is_file()
