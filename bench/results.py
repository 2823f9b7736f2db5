"""What a scenario hands back: tables for BENCHMARKS.md, targets, correctness checks, raw data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str = ""


@dataclass
class Target:
    """A goal from issue 6; `met` is None when not judged (smoke sizes, missing data)."""

    goal: str
    measured: str
    met: bool | None


@dataclass
class Check:
    """A correctness condition: it must hold at every size, the smoke run included."""

    condition: str
    passed: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    number: int
    title: str
    setup: str
    measured_at: str = ""
    commit: str = ""
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def check(self, condition: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(condition, bool(passed), detail))
        return bool(passed)

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed_checks

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScenarioResult:
        return cls(
            number=raw["number"],
            title=raw["title"],
            setup=raw["setup"],
            measured_at=raw.get("measured_at", ""),
            commit=raw.get("commit", ""),
            tables=[Table(**table) for table in raw.get("tables", [])],
            targets=[Target(**target) for target in raw.get("targets", [])],
            checks=[Check(**check) for check in raw.get("checks", [])],
            notes=list(raw.get("notes", [])),
            data=dict(raw.get("data", {})),
            error=raw.get("error"),
        )
