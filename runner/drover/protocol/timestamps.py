"""RFC 3339 timestamps as Kubernetes writes them (UTC, `Z`)."""

from __future__ import annotations

import datetime as dt


def rfc3339(value: dt.datetime) -> str:
    """`2030-01-01T02:30:00Z`: whole seconds, as in `metav1.Time` (annotations, conditions)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(value: dt.datetime) -> str:
    """`2030-01-01T02:30:00.123456Z`: microseconds, for times a few milliseconds apart
    (attempt start and finish times in status)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str | None) -> dt.datetime | None:
    """An aware datetime from an RFC 3339 string (`Z` or an offset); None for None or ""."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)
