"""`stock-sync simulator [--kind backmarket|refurbed]`: each kind's simulator is started with the
options given, on its own default port when none is."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import pytest

import simulator.__main__ as backmarket_cli
import simulator.refurbed.__main__ as refurbed_cli
from app.cli import main
from simulator.refurbed.config import RefurbedSimulatorConfig


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The argv each simulator's `main` was called with, instead of serving."""
    calls: dict[str, list[str]] = {}

    def recorder(kind: str) -> Callable[[Sequence[str] | None], None]:
        def record(argv: Sequence[str] | None = None) -> None:
            calls[kind] = list(argv or [])

        return record

    monkeypatch.setattr(backmarket_cli, "main", recorder("backmarket"))
    monkeypatch.setattr(refurbed_cli, "main", recorder("refurbed"))
    return calls


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_simulator_is_back_markets_by_default(started: dict[str, list[str]]) -> None:
    assert main(["simulator", "--listings", "300"], out=io.StringIO(), err=io.StringIO()) == 0

    assert list(started) == ["backmarket"]
    assert option(started["backmarket"], "--port") == "9000"
    assert option(started["backmarket"], "--listings") == "300"


def test_kind_refurbed_starts_the_refurbed_simulator_with_the_options_given(
    started: dict[str, list[str]],
) -> None:
    code = main(
        [
            "simulator",
            "--kind",
            "refurbed",
            "--listings",
            "20000",
            "--latency-ms",
            "20",
            "--requests-per-10s",
            "20",
            "--token",
            "t-1",
        ],
        out=io.StringIO(),
        err=io.StringIO(),
    )

    assert code == 0
    assert list(started) == ["refurbed"]
    argv = started["refurbed"]
    assert option(argv, "--port") == "9100"
    # What the Refurbed simulator's own parser makes of the options it was handed.
    config = refurbed_cli.config_from_args(refurbed_cli.build_parser().parse_args(argv))
    assert config == RefurbedSimulatorConfig(
        offers=20000, latency_ms=20.0, requests_per_window=20, token="t-1"
    )


def test_a_port_given_wins_over_the_kinds_default(started: dict[str, list[str]]) -> None:
    main(
        ["simulator", "--kind", "refurbed", "--port", "9200"],
        out=io.StringIO(),
        err=io.StringIO(),
    )

    assert option(started["refurbed"], "--port") == "9200"


def test_an_unknown_kind_is_refused(started: dict[str, list[str]]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulator", "--kind", "etsy"], out=io.StringIO(), err=io.StringIO())

    assert exited.value.code == 2
    assert started == {}
