"""`drover tasks`: per Task, its concurrency limit, the runs holding a slot, queued and
waiting now, and the runs that succeeded and failed in the last 24 hours with their median
and 95th-percentile durations."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from drover_cli.connect import all_namespaces_option, connection_options, pop_target
from drover_cli.inputs import DURATION
from drover_cli.output import Column, console, emit, output_option, render_table, seconds_text, show


def _count(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "")


def task_columns(window: str, all_namespaces: bool) -> list[Column]:
    columns = [
        Column("NAME", lambda t: t.name),
        Column("LIMIT", lambda t: "-" if t.limit is None else str(t.limit)),
        Column("RUNNING", lambda t: _count(t.running, "cyan")),
        Column("QUEUED", lambda t: _count(t.queued, "blue")),
        Column("WAITING", lambda t: _count(t.waiting, "magenta")),
        Column(f"SUCCEEDED({window})", lambda t: _count(t.succeeded, "green")),
        Column(f"FAILED({window})", lambda t: _count(t.failed, "red")),
        Column("P50", lambda t: seconds_text(t.p50_seconds)),
        Column("P95", lambda t: seconds_text(t.p95_seconds)),
        Column(f"CANCELED({window})", lambda t: str(t.canceled), True),
        Column("PER-KEY", lambda t: "-" if t.per_key_limit is None else str(t.per_key_limit), True),
        Column("READY", lambda t: "True" if t.ready else Text(str(t.problem), "red"), True),
    ]
    if all_namespaces:
        columns.insert(0, Column("NAMESPACE", lambda t: t.namespace))
    return columns


@click.command()
@click.option("--window", type=DURATION, help="Count outcomes over this long back (default 24h).")
@all_namespaces_option
@output_option()
@connection_options
def tasks(**params: Any) -> None:
    """Each Task's load now and its outcomes in the last 24 hours."""
    target = pop_target(params)
    with target.client() as client:
        found = client.tasks(all_namespaces=params["all_namespaces"], window=params["window"])
    fmt = params["output"]
    if fmt == "name":
        for task in found.items:
            click.echo(task.name)
    elif fmt in ("json", "yaml"):
        emit(found, fmt)
    elif not found.items:
        console(stderr=True).print("No Tasks found.")
    else:
        columns = task_columns(found.window.upper(), params["all_namespaces"])
        show(render_table(found.items, columns, fmt == "wide"))
