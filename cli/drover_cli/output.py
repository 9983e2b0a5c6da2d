"""How results are printed: tables (Rich) on terminals and pipes alike, `-o json|yaml|name`,
colour only on a terminal and never with NO_COLOR (Rich's own rules), and the short human
forms of times and durations that tables use."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import yaml
from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from drover.protocol.phases import Phase

FORMATS = ("table", "wide", "json", "yaml", "name")

_PHASE_STYLES = {
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.TIMED_OUT: "red",
    Phase.CANCELED: "yellow",
    Phase.EXPIRED: "yellow",
    Phase.RUNNING: "cyan",
    Phase.STARTING: "cyan",
    Phase.WAITING: "magenta",
    Phase.RETRYING: "yellow",
    Phase.QUEUED: "blue",
}


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr). Off a terminal, wide enough that tables are never
    wrapped or cut (scripts read them); Rich leaves colour off there and with NO_COLOR."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal else max(shutil.get_terminal_size((200, 24)).columns, 400)
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=not terminal)


def show(renderable: RenderableType, out: Console | None = None) -> None:
    """Print a table or a description; off a terminal without the padding Rich leaves at
    the ends of lines (scripts and diffs read it)."""
    out = out or console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def output_option(*formats: str) -> Callable[[Any], Any]:
    """`-o/--output` with the formats a command prints in."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(formats or FORMATS),
        default=(formats or FORMATS)[0],
        show_default=True,
        help="How to print the result.",
    )


def plain(value: Any) -> Any:
    """A wire model (or a list of them) as JSON-ready data, as the API sends it."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def dump(value: Any, fmt: str) -> str:
    data = plain(value)
    if fmt == "yaml":
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return json.dumps(data, indent=2) + "\n"


def emit(value: Any, fmt: str) -> None:
    """Print `value` as JSON or YAML: exactly, never wrapped or coloured."""
    sys.stdout.write(dump(value, fmt))
    sys.stdout.flush()


def phase_text(phase: str) -> Text:
    return Text(phase, style=_PHASE_STYLES.get(phase, ""))  # type: ignore[call-overload]


def table(*columns: str) -> Table:
    """A table as kubectl prints one: upper-case headers, no borders."""
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column, no_wrap=True, overflow="ignore")
    return grid


@dataclass(frozen=True)
class Column:
    """A table column: its header, how to show a row's value, and whether only `-o wide`
    shows it."""

    header: str
    value: Callable[[Any], RenderableType]
    wide: bool = False


def render_table(rows: Iterable[Any], columns: Sequence[Column], wide: bool) -> Table:
    shown = [c for c in columns if wide or not c.wide]
    grid = table(*(c.header for c in shown))
    for row in rows:
        grid.add_row(*(c.value(row) for c in shown))
    return grid


# -- times and durations ---------------------------------------------------------------------


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def age(when: dt.datetime | None, at: dt.datetime | None = None) -> str:
    """How long ago, as kubectl shows ages: `45s`, `12m`, `3h4m`, `5d`."""
    if when is None:
        return "-"
    seconds = max(int(((at or now()) - when).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def seconds_text(seconds: float | None) -> str:
    """A duration for people: `850ms`, `4.2s`, `3m12s`, `2h5m`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def span(start: dt.datetime | None, end: dt.datetime | None, at: dt.datetime | None = None) -> str:
    """From `start` to `end` (still going: to now)."""
    if start is None:
        return "-"
    return seconds_text(((end or at or now()) - start).total_seconds())


def timestamp(when: dt.datetime | None) -> str:
    """A time in UTC, to the second (`2025-03-01 12:00:03Z`)."""
    if when is None:
        return "-"
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def json_text(value: Any, limit: int = 2000) -> str:
    """A JSON value on one line, cut at `limit` characters."""
    text = json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"
