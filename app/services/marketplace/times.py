"""RFC 3339 times as the marketplaces send and read them (Back Market's order dates, Refurbed's
`google.protobuf.Timestamp`), to and from the naive UTC the service stores."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: object) -> datetime | None:
    """RFC 3339 (a time without zone counts as UTC) to naive UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def format_time(moment: datetime) -> str:
    """Naive UTC (or aware) to RFC 3339 with a Z."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"
