"""Go-style duration strings (`90s`, `5m`, `1h30m`), as Task and TaskRun specs, the trigger
API and `drover.wait_for` take them.

Kubernetes CEL parses exactly this syntax with `duration()`, so CRDs can compare durations and
everything else reads the same strings with `parse_duration`. Days are deliberately not
supported: CEL would not understand them (write `24h`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Final

#: Shared by the CRD pattern and the Python validator. Both `µs` (micro sign) and `μs` (Greek
#: mu) are accepted because Go's time.ParseDuration, which CEL uses, accepts both.
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$"
#: Bounds the strings CEL has to parse, which keeps rule cost estimates small.
DURATION_MAX_LENGTH: Final = 32
#: Go's time.Duration is an int64 of nanoseconds; CEL fails on anything larger.
_MAX_NANOS: Final = 2**63 - 1
MAX_DURATION: Final = timedelta(microseconds=_MAX_NANOS // 1000)

_UNIT_NANOS: Final[dict[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_FULL = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: str) -> timedelta:
    """Parse a duration string such as `1h30m` (microsecond precision, like timedelta)."""
    if not _FULL.fullmatch(value):
        raise ValueError(f"invalid duration {value!r}: expected a number and unit, e.g. 90s, 5m")
    nanos = sum(Decimal(num) * _UNIT_NANOS[unit] for num, unit in _PART.findall(value))
    if nanos > _MAX_NANOS:  # checked first: timedelta itself overflows a little further up
        raise ValueError(f"duration {value!r} is too large (max {format_duration(MAX_DURATION)})")
    return timedelta(microseconds=int(nanos // 1000))


def format_duration(value: timedelta) -> str:
    """Format a non-negative timedelta compactly (`1h30m`, `90s` → `1m30s`, `0s`)."""
    if value < timedelta(0):
        raise ValueError("durations must not be negative")
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if micros:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif seconds or not (hours or minutes):
        parts.append(f"{seconds}s")
    return "".join(parts)
