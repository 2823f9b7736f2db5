"""`stock-sync sync` and `stock-sync runs`: a bar and a table on a terminal, plain lines and JSON
otherwise, exit 1 when a run is not completed.

The commands run in-process through `app.cli.main`, against a simulator serving HTTP on a thread
and an SQLite file; a stream that says it is a terminal stands for one.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.cli import main
from app.cli_display import print_runs_table
from app.config import load_settings
from app.db import create_engine
from app.logs import THIRD_PARTY_LOGGERS
from app.services.sync.runs import Drift, Run
from simulator.config import SimulatorConfig
from simulator.demo import seed_demo_database
from simulator.testing import RunningSimulator

LISTINGS = 120  # 3 pages of 50
PAGES = 3
ANSI_CODE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`main` configures the process's logging; put back what the other tests expect."""
    root = logging.getLogger()
    names = [*THIRD_PARTY_LOGGERS, "httpx"]
    saved = {
        name: (
            logging.getLogger(name).level,
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
        )
        for name in names
    }
    root_level = root.level
    yield
    for handler in [h for h in root.handlers if type(h).__name__ == "_StockSyncHandler"]:
        root.removeHandler(handler)
    root.setLevel(root_level)
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    with RunningSimulator(SimulatorConfig(listings=LISTINGS, seed=7)) as running:
        yield running


@pytest.fixture
def environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulator: RunningSimulator
) -> None:
    """The variables a cron job would set, on a fresh database seeded to match the simulator."""
    for name in ("LOG_FORMAT", "LOG_LEVEL", "API_KEYS", "BACKMARKET_MARKETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("BACKMARKET_BASE_URL", simulator.base_url)
    monkeypatch.setenv("BACKMARKET_TOKEN", simulator.config.token)
    monkeypatch.setenv("BACKMARKET_REQUESTS_PER_10S", "10000")
    monkeypatch.setenv("BACKMARKET_MAX_ATTEMPTS", "1")
    asyncio.run(seed_demo_database(load_settings(), simulator))


def run_cli(*argv: str, out: io.StringIO | None = None, err: io.StringIO | None = None) -> Result:
    out = io.StringIO() if out is None else out
    err = io.StringIO() if err is None else err
    code = main(list(argv), out=out, err=err)
    return Result(code=code, out=out.getvalue(), err=err.getvalue())


class Result:
    def __init__(self, *, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]


# -- sync ------------------------------------------------------------------------------------


def test_sync_off_a_terminal_prints_progress_lines_and_the_run_as_json(environment: None) -> None:
    result = run_cli("sync")

    assert result.code == 0
    run = json.loads(result.out)["run"]
    assert run["status"] == "completed"
    assert run["trigger"] == "cli"
    assert run["pages_fetched"] == PAGES
    progress = re.findall(r"^run (\d+): pages (\d+)/(\d+|\?), listings (\d+)", result.err, re.M)
    assert progress, result.err
    assert progress[-1] == (str(run["id"]), str(PAGES), str(PAGES), str(LISTINGS))
    # No bar: no carriage returns or cursor codes in what a log file receives.
    assert "\r" not in result.err
    assert "\x1b[" not in result.err


def test_sync_logs_json_lines_with_the_run_id_and_its_counts_off_a_terminal(
    environment: None,
) -> None:
    result = run_cli("sync")

    run = json.loads(result.out)["run"]
    lines = result.log_lines()
    started = [line for line in lines if line.get("event") == "bulk_sync_started"]
    finished = [line for line in lines if line.get("event") == "bulk_sync_finished"]
    assert len(started) == 1
    assert len(finished) == 1
    assert started[0]["run_id"] == run["id"]
    assert started[0]["level"] == "INFO"
    assert started[0]["trigger"] == "cli"
    assert finished[0]["run_id"] == run["id"]
    assert {
        key: finished[0][key]
        for key in ("status", "pages", "listings", "matched", "updated", "skipped_newer", "errors")
    } == {
        "status": "completed",
        "pages": run["pages_fetched"],
        "listings": run["listings_seen"],
        "matched": run["matched"],
        "updated": run["updated"],
        "skipped_newer": run["skipped_newer"],
        "errors": 0,
    }
    assert finished[0]["duration_seconds"] == run["duration_seconds"]


def test_sync_on_a_terminal_shows_a_progress_bar_not_lines(environment: None) -> None:
    result = run_cli("sync", err=TerminalStream())

    assert result.code == 0
    assert json.loads(result.out)["run"]["status"] == "completed"
    assert not re.search(r"^run \d+: pages", result.err, re.M)
    # rich's bar: redrawn in place with terminal codes, pages counted "fetched/expected".
    assert "\r\x1b[2K" in result.err
    shown = ANSI_CODE.sub("", result.err)
    assert re.search(rf"run 1 ━+ +{PAGES}/{PAGES} pages · {LISTINGS} listings", shown)
    # On a terminal the log lines are text, written above the bar.
    assert re.search(r"[\r\n]\S+Z INFO +app\.services\.sync\.run: bulk sync run 1 started", shown)
    assert '"level"' not in shown


def test_sync_on_a_terminal_prints_a_summary_and_json_only_when_asked(environment: None) -> None:
    summary = run_cli("sync", out=TerminalStream(), err=TerminalStream())
    asked = run_cli("sync", "--json", out=TerminalStream(), err=TerminalStream())

    assert summary.code == 0
    assert re.search(r"run 1 .*completed", summary.out)
    assert f"{LISTINGS} listings read in {PAGES} of {PAGES} pages" in summary.out
    assert not summary.out.lstrip().startswith("{")
    assert json.loads(asked.out)["run"]["id"] == 2


def test_sync_exits_1_with_the_failed_run_when_back_market_refuses(
    environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKMARKET_TOKEN", "not-the-simulator-token")

    result = run_cli("sync", "--json")

    assert result.code == 1
    run = json.loads(result.out)["run"]
    assert run["status"] == "failed"
    assert run["errors"][0]["kind"] == "market_failed"
    assert "not-the-simulator-token" not in result.out + result.err


# -- runs ------------------------------------------------------------------------------------


def test_runs_off_a_terminal_prints_aligned_plain_text_newest_first(environment: None) -> None:
    assert run_cli("sync").code == 0
    assert run_cli("sync", "--dry-run").code == 0

    result = run_cli("runs")

    assert result.code == 0
    header, *rows = result.out.splitlines()
    assert header.split()[:4] == ["id", "marketplace", "trigger", "status"]
    assert [row.split()[0] for row in rows] == ["2", "1"]
    assert "completed (dry run)" in rows[0]
    assert f"{PAGES}/{PAGES}" in rows[1].split()
    # Aligned: every column starts where its header does.
    assert len({len(line) for line in [header, *rows]}) <= len(rows) + 1
    assert header.index("status") == rows[0].index("completed")
    assert "\x1b[" not in result.out


def test_runs_on_a_terminal_prints_a_table(
    environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert run_cli("sync").code == 0

    result = run_cli("runs", out=TerminalStream())

    assert result.code == 0
    title, header, row = [
        line for line in ANSI_CODE.sub("", result.out).splitlines() if re.search(r"\w", line)
    ]
    assert title.strip() == "bulk sync runs, newest first"
    assert header.split()[:4] == ["id", "marketplace", "trigger", "status"]
    assert row.split()[:4] == ["1", "1", "cli", "completed"]
    assert "\x1b[" in result.out


def test_runs_json_limit_and_marketplace_filter(environment: None) -> None:
    for _ in range(3):
        assert run_cli("sync").code == 0

    limited = json.loads(run_cli("runs", "--json", "--limit", "2").out)
    other_marketplace = json.loads(run_cli("runs", "--json", "--marketplace", "4").out)
    back_market = json.loads(run_cli("runs", "--json", "--marketplace", "1").out)

    assert [run["id"] for run in limited["runs"]] == [3, 2]
    assert other_marketplace == {"runs": []}
    assert len(back_market["runs"]) == 3


def test_runs_table_shows_each_runs_drift_and_corrected_totals() -> None:
    started = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    drifted = Run(
        id=7,
        marketplace_id=1,
        trigger="cli",
        status="completed",
        started_at=started,
        updated=40,
        variations_resummed=3,
        drift=Drift(rows=12, higher=9, lower=3, units=57),
    )
    clean = Run(id=6, marketplace_id=1, trigger="cli", status="completed", started_at=started)
    stream = io.StringIO()

    print_runs_table(stream, [drifted, clean])

    header, *rows = stream.getvalue().splitlines()
    # The last columns: numbers without spaces (the start time has one).
    assert header.split()[-4:] == ["drift", "higher/lower/units", "resummed", "errors"]
    assert [row.split()[-4:-1] for row in rows] == [["12", "9/3/57", "3"], ["0", "0/0/0", "0"]]


def test_runs_refuses_a_limit_out_of_range(environment: None) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["runs", "--limit", "0"], out=io.StringIO(), err=io.StringIO())

    assert exited.value.code == 2


# -- set-quantity -----------------------------------------------------------------------------


def test_set_quantity_prints_the_result_and_a_stale_expected_quantity_exits_1_with_the_live_one(
    environment: None,
) -> None:
    live = json.loads(run_cli("refresh", "1").out)["quantity"]

    applied = run_cli(
        "set-quantity", "1", str(live + 2), "--expected", str(live), "--idempotency-key", "cli-1"
    )
    stale = run_cli("set-quantity", "1", str(live + 5), "--expected", str(live))
    restored = run_cli("set-quantity", "1", str(live), "--marketplace", "1")

    assert applied.code == 0, applied.err
    result = json.loads(applied.out)
    assert (result["previous_quantity"], result["quantity"]) == (live, live + 2)
    assert stale.code == 1
    refusal = json.loads(stale.err.strip().splitlines()[-1])
    assert (refusal["status"], refusal["reason"], refusal["live_quantity"]) == (
        409,
        "quantity_changed",
        live + 2,
    )
    assert stale.out == ""
    assert restored.code == 0 and json.loads(restored.out)["quantity"] == live


# -- a database never migrated ---------------------------------------------------------------

SCHEMA_COMMANDS = [
    ("sync", "--json"),
    ("runs",),
    ("refresh", "1"),
    ("add-quantity", "1", "2"),
    ("set-quantity", "1", "2"),
]


@pytest.fixture
def never_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulator: RunningSimulator
) -> Path:
    """A fresh folder as a new user has it: no database file yet."""
    for name in ("LOG_FORMAT", "LOG_LEVEL", "API_KEYS", "BACKMARKET_MARKETS"):
        monkeypatch.delenv(name, raising=False)
    database = tmp_path / "fresh.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("BACKMARKET_BASE_URL", simulator.base_url)
    monkeypatch.setenv("BACKMARKET_TOKEN", simulator.config.token)
    monkeypatch.setenv("BACKMARKET_REQUESTS_PER_10S", "10000")
    return database


@pytest.mark.parametrize("argv", SCHEMA_COMMANDS, ids=lambda argv: argv[0])
def test_a_command_on_a_never_migrated_database_migrates_it_first_by_default(
    never_migrated: Path, argv: tuple[str, ...]
) -> None:
    result = run_cli(*argv)

    assert "Traceback" not in result.err
    assert "no such table" not in result.err
    assert "runs" in json.loads(run_cli("runs", "--json").out)
    if argv[0] == "sync":
        assert result.code == 0
        assert json.loads(result.out)["run"]["status"] == "completed"
    if argv[0] == "runs":
        assert result.code == 0


@pytest.mark.parametrize("argv", SCHEMA_COMMANDS, ids=lambda argv: argv[0])
def test_a_command_on_a_never_migrated_database_says_to_migrate_when_start_up_migrations_are_off(
    never_migrated: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    monkeypatch.setenv("RUN_MIGRATIONS_ON_STARTUP", "false")

    result = run_cli(*argv)

    assert result.code == 1
    assert result.out == ""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "stock-sync migrate" in lines[0]
    assert "Traceback" not in result.err


def test_a_command_runs_once_the_database_is_migrated_with_start_up_migrations_off(
    never_migrated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUN_MIGRATIONS_ON_STARTUP", "false")
    assert run_cli("migrate").code == 0

    result = run_cli("runs", "--json")

    assert result.code == 0
    assert json.loads(result.out) == {"runs": []}


# -- several marketplaces ----------------------------------------------------------------------


@pytest.fixture
def second_account(
    environment: None, monkeypatch: pytest.MonkeyPatch, simulator: RunningSimulator
) -> int:
    """Marketplace 7, a second Back Market account (served by the same simulator here)."""
    monkeypatch.setenv("MARKETPLACE_7_KIND", "backmarket")
    monkeypatch.setenv("MARKETPLACE_7_TOKEN", simulator.config.token)
    monkeypatch.setenv("MARKETPLACE_7_BASE_URL", simulator.base_url)
    monkeypatch.setenv("MARKETPLACE_7_REQUESTS_PER_10S", "10000")
    return 7


def set_sync_enabled(marketplace_id: int, enabled: bool) -> None:
    async def update() -> None:
        engine = create_engine(load_settings())
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE marketplace SET sync_enabled = :on WHERE id = :id"),
                    {"on": int(enabled), "id": marketplace_id},
                )
        finally:
            await engine.dispose()

    asyncio.run(update())


def test_sync_and_runs_take_any_configured_marketplace(second_account: int) -> None:
    assert run_cli("sync").code == 0

    synced = run_cli("sync", "--marketplace", str(second_account))
    only_second = json.loads(run_cli("runs", "--json", "--marketplace", "7").out)
    table = run_cli("runs").out.splitlines()

    assert synced.code == 0, synced.err
    run = json.loads(synced.out)["run"]
    assert (run["marketplace_id"], run["status"], run["pages_fetched"]) == (7, "completed", PAGES)
    assert [found["marketplace_id"] for found in only_second["runs"]] == [7]
    assert [row.split()[:2] for row in table[1:]] == [["2", "7"], ["1", "1"]]


def test_sync_of_a_disabled_marketplace_exits_1_with_one_line(second_account: int) -> None:
    # Marketplace 7's row is created by the first command that opens the service.
    assert run_cli("sync", "--marketplace", "7", "--dry-run").code == 0
    set_sync_enabled(second_account, False)

    refused = run_cli("sync", "--marketplace", "7")
    other = run_cli("sync", "--marketplace", "1")
    set_sync_enabled(second_account, True)
    again = run_cli("sync", "--marketplace", "7")

    assert refused.code == 1
    assert refused.out == ""
    # One line besides the log records: the answer the API would give.
    [answer] = [line for line in refused.log_lines() if "level" not in line]
    assert (answer["status"], answer["reason"]) == (409, "sync_disabled")
    assert other.code == 0
    assert again.code == 0, again.err


def test_a_marketplace_that_does_not_exist_exits_1_with_the_api_answer(
    environment: None,
) -> None:
    refused = run_cli("sync", "--marketplace", "9")
    refreshed = run_cli("refresh", "1", "--marketplace", "9")
    added = run_cli("add-quantity", "1", "2", "--marketplace", "9")

    for result in (refused, refreshed, added):
        assert result.code == 1
        answer = json.loads(result.err.splitlines()[-1])
        assert answer["status"] == 422
        assert answer["detail"].startswith("marketplace 9 ")
