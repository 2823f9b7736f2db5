"""How `stock-sync` shows runs: a progress bar or plain lines, a table or aligned text.

A terminal gets rich's bar and table; a pipe, a file or cron gets plain lines that read well in
a log and parse with `awk`. Whether a stream is a terminal is asked of the stream itself, so a
test hands in a stream that says yes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO, cast

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.logs import logs_written_to
from app.services.sync import Run

# Errors of a run shown under its summary on a terminal; `--json` has them all.
SHOWN_ERRORS = 10


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_console(stream: TextIO) -> Console:
    """A rich console on `stream`, which the caller has found to be a terminal."""
    return Console(file=stream, force_terminal=True)


class PlainProgress:
    """One line per progress report (after each batch written), for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def __call__(self, run: Run) -> None:
        expected = run.pages_expected or "?"
        print(
            f"run {run.id}: pages {run.pages_fetched}/{expected}, listings {run.listings_seen}, "
            f"updated {run.updated}, unchanged {run.unchanged}, skipped_newer {run.skipped_newer}",
            file=self.stream,
            flush=True,
        )


class ProgressBar:
    """rich's bar: pages fetched of expected, listings and updates so far, time left (ETA).

    While it is shown, log lines are written above it instead of through it.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("run {task.fields[run_id]}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("pages · {task.fields[listings]} listings · {task.fields[updated]} updated"),
            TextColumn("· eta"),
            TimeRemainingColumn(),
            console=console,
        )
        # The total is unknown until the first page says how many listings there are.
        self.task = self.progress.add_task(
            "bulk sync", total=None, run_id="…", listings=0, updated=0
        )
        # The log handler only calls write() and flush(), which TextIOBase is enough for.
        self._logs = logs_written_to(cast(TextIO, _AboveTheBar(console)))

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        self._logs.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._logs.__exit__(exc_type, exc, traceback)
        self.progress.stop()

    def __call__(self, run: Run) -> None:
        self.progress.update(
            self.task,
            total=run.pages_expected or None,
            completed=run.pages_fetched,
            run_id=run.id,
            listings=run.listings_seen,
            updated=run.updated,
        )


class _AboveTheBar(io.TextIOBase):
    """A stream for the log handler: each line goes out above the live bar, unwrapped."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        self.console.out(text, end="", highlight=False)
        return len(text)


def print_run_summary(stream: TextIO, run: Run) -> None:
    """The end of `stock-sync sync` for a person: status, summary line, the first errors."""
    console = terminal_console(stream)
    style = {"completed": "green", "partial": "yellow"}.get(run.status, "red")
    duration = f" in {run.duration_seconds:g} s" if run.duration_seconds is not None else ""
    console.print(f"run {run.id} [{style}]{run.status}[/]{duration}", highlight=False)
    if run.summary:
        console.print(run.summary, markup=False, highlight=False)
    for error in run.errors[:SHOWN_ERRORS]:
        console.print(f"  {error.get('kind', 'error')}: {error.get('message', '')}", markup=False)
    if len(run.errors) > SHOWN_ERRORS:
        console.print(f"  … {len(run.errors) - SHOWN_ERRORS} more (see --json)", markup=False)


RUN_COLUMNS = (
    "id",
    "marketplace",
    "trigger",
    "status",
    "started (UTC)",
    "seconds",
    "pages",
    "listings",
    "matched",
    "updated",
    "skipped_newer",
    "drift",
    "higher/lower/units",
    "resummed",
    "errors",
)
# Numbers are right-aligned, words left-aligned.
_TEXT_COLUMNS = frozenset({"trigger", "status", "started (UTC)"})


def run_row(run: Run) -> tuple[str, ...]:
    status = run.status + (" (dry run)" if run.dry_run else "")
    return (
        str(run.id),
        str(run.marketplace_id),
        run.trigger,
        status,
        run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        "" if run.duration_seconds is None else f"{run.duration_seconds:.1f}",
        f"{run.pages_fetched}/{run.pages_expected}",
        str(run.listings_seen),
        str(run.matched),
        str(run.updated),
        str(run.skipped_newer),
        str(run.drift.rows),
        f"{run.drift.higher}/{run.drift.lower}/{run.drift.units}",
        str(run.variations_resummed),
        str(len(run.errors)),
    )


def print_runs_table(stream: TextIO, runs: Sequence[Run]) -> None:
    """rich's table on a terminal; aligned plain text (one run a line) otherwise."""
    rows = [run_row(run) for run in runs]
    if is_terminal(stream):
        table = Table(title="bulk sync runs, newest first", box=box.SIMPLE_HEAD)
        for name in RUN_COLUMNS:
            table.add_column(
                name, justify="left" if name in _TEXT_COLUMNS else "right", no_wrap=True
            )
        for run, row in zip(runs, rows, strict=True):
            table.add_row(*row, style="red" if run.status == "failed" else None)
        terminal_console(stream).print(table)
        return
    widths = [max(len(cell) for cell in column) for column in zip(RUN_COLUMNS, *rows, strict=True)]
    for cells in (RUN_COLUMNS, *rows):
        line = "  ".join(
            cell.ljust(width) if name in _TEXT_COLUMNS else cell.rjust(width)
            for name, cell, width in zip(RUN_COLUMNS, cells, widths, strict=True)
        )
        print(line.rstrip(), file=stream)
