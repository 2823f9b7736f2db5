"""How the status page writes times, durations and counts (Jinja filters)."""

from __future__ import annotations

from datetime import UTC, datetime


def when(moment: datetime | str | None) -> str:
    """`2026-11-28 16:54:57 UTC`; an ISO string is read first; none is `—`."""
    if moment is None or moment == "":
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    """`0.4 s`, `42 s`, `3 min 5 s`, `2 h 10 min`; none is `—`."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def number(value: int | float | None) -> str:
    """Thousands separated by a thin space: `12 345`."""
    if value is None:
        return "—"
    return f"{value:,}".replace(",", "\u202f")
