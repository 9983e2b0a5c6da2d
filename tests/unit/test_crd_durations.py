"""Duration strings: the Python parser agrees with the CRD pattern and with Go's syntax."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from drover_operator.crd.durations import (
    DURATION_PATTERN,
    MAX_DURATION,
    format_duration,
    parse_duration,
)
from drover_operator.crd.schema import iter_nodes, structural_schema
from drover_operator.crd.task import TaskSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("10us", timedelta(microseconds=10)),
        ("10µs", timedelta(microseconds=10)),
        ("10μs", timedelta(microseconds=10)),
        ("1500ns", timedelta(microseconds=1)),
        ("0s", timedelta(0)),
        ("24h", timedelta(days=1)),
        ("1h1h", timedelta(hours=2)),  # Go sums repeated units too
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    "text", ["", "90", "1d", "1w", "-5s", "+5s", "1 h", "1h 30m", ".5s", "5.s", "s", "1H", "5sec"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_rejects_values_go_cannot_represent() -> None:
    assert parse_duration("2562047h") <= MAX_DURATION
    with pytest.raises(ValueError, match="too large"):
        parse_duration("2562048h")
    with pytest.raises(ValueError, match="too large"):
        parse_duration("99999999999999999999h")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=1, seconds=5), "1h5s"),
        (timedelta(days=2), "48h"),
        (timedelta(milliseconds=1500), "1.5s"),
    ],
)
def test_format_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


def test_crd_uses_the_same_pattern() -> None:
    schema = structural_schema(TaskSpec)
    patterns = {
        path: node.get("pattern")
        for path, node in iter_nodes(schema)
        if path.endswith(("Delay", "heartbeat", "maxDuration", "pending", "Deadline", "Finished"))
    }
    assert len(patterns) == 7
    assert set(patterns.values()) == {DURATION_PATTERN}
