"""Go-style duration strings (`90s`, `5m`, `1h30m`) as used in Task and TaskRun specs.

Kubernetes CEL parses exactly this syntax with `duration()`, so the CRD can compare durations
(e.g. `minDelay <= maxDelay`) and the operator reads the same strings with `parse_duration`.
Days are deliberately not supported: CEL would not understand them (write `24h`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from drover.protocol.durations import (
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    MAX_DURATION,
    format_duration,
    parse_duration,
)
from drover_operator.crd.base import CEL

__all__ = [
    "DURATION_MAX_LENGTH",
    "DURATION_PATTERN",
    "MAX_DURATION",
    "Duration",
    "PositiveDuration",
    "cel_is_duration",
    "format_duration",
    "parse_duration",
]


def cel_is_duration(expr: str) -> str:
    """CEL guard so rules comparing durations skip malformed strings (the pattern already
    reports those) instead of adding a confusing "type conversion error"."""
    return f"{expr}.matches(r'{DURATION_PATTERN}')"


def _valid(value: str) -> str:
    parse_duration(value)  # range check; the pattern itself is enforced by StringConstraints
    return value


def _positive(value: str) -> str:
    if parse_duration(value) <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


_DURATION_STRING = StringConstraints(pattern=DURATION_PATTERN, max_length=DURATION_MAX_LENGTH)

#: A duration that may be zero (e.g. `delay: 0s`, `ttlAfterFinished: 0s`).
Duration = Annotated[str, _DURATION_STRING, AfterValidator(_valid)]

#: A duration that must be greater than zero (timeouts, deadlines, backoff delays).
PositiveDuration = Annotated[
    str,
    _DURATION_STRING,
    AfterValidator(_valid),
    AfterValidator(_positive),
    CEL(
        f"!{cel_is_duration('self')} || duration(self) > duration('0s')",
        "must be a duration greater than zero",
    ),
]
