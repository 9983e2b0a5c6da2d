"""Parsing what users type: JSON values (`JSON`, `@file`, `-` for stdin), durations, tags.
Each is a Click parameter type, so a bad value is a usage error (exit 2) naming the flag."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import IO, Any

import click

from drover.protocol.durations import parse_duration
from drover.protocol.runs import tag_filter


def read_json(value: str, stdin: IO[str] | None = None) -> Any:
    """`value` as JSON: inline, `@path` (a file's content) or `-` (standard input).
    Raises ValueError saying what is wrong."""
    if value == "-":
        text = (stdin or sys.stdin).read()
    elif value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        text = value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


class JsonValue(click.ParamType[Any]):
    """A JSON value, inline, `@file` or `-` (read when the command runs)."""

    name = "JSON|@FILE|-"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return read_json(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(click.ParamType[dt.timedelta]):
    """A duration as Kubernetes and Drover write them: `90s`, `5m`, `1h30m`."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Tag(click.ParamType[str]):
    """`key` or `key=value`, label-style."""

    name = "TAG"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            tag_filter(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


JSON_VALUE = JsonValue()
DURATION = Duration()
TAG = Tag()
