"""`drover runs` (the run history, newest first; `-w` keeps the table live) and `drover
logs` (a run's log lines from Drover's history; `-f` follows a live run to its end)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.live import Live

import drover
from drover.protocol.phases import Phase
from drover.protocol.runs import RunView
from drover_cli.connect import all_namespaces_option, connection_options, pop_target
from drover_cli.follow import LogCursor, follow, log_line
from drover_cli.inputs import DURATION, TAG
from drover_cli.names import run_names, task_names
from drover_cli.output import (
    Column,
    age,
    console,
    emit,
    output_option,
    phase_text,
    render_table,
    show,
    span,
)

_WATCH_SECONDS = 1.0

RUN_COLUMNS = [
    Column("NAME", lambda r: r.name),
    Column("TASK", lambda r: r.task),
    Column("PHASE", lambda r: phase_text(r.phase)),
    Column("ATTEMPT", lambda r: str(r.attempt)),
    Column("AGE", lambda r: age(r.created_at)),
    Column("DURATION", lambda r: span(r.started_at, r.finished_at)),
    Column("REASON", lambda r: r.reason or (r.waiting.reason if r.waiting else "") or "", True),
    Column("TAGS", lambda r: ",".join(r.tags), True),
    Column("PARENT", lambda r: r.parent or "", True),
]
NAMESPACE_COLUMN = Column("NAMESPACE", lambda r: r.namespace)


def run_columns(all_namespaces: bool) -> list[Column]:
    return [NAMESPACE_COLUMN, *RUN_COLUMNS] if all_namespaces else RUN_COLUMNS


@click.command()
@click.option("-t", "--task", metavar="TASK", shell_complete=task_names, help="Runs of this Task.")
@click.option(
    "--phase",
    "phases",
    multiple=True,
    type=click.Choice([p.value for p in Phase], case_sensitive=False),
    help="Runs in this phase (repeatable).",
)
@click.option(
    "--tag", "tags", type=TAG, multiple=True, help="Runs with this tag: key or key=value."
)
@click.option("--since", type=DURATION, help="Runs created in the last DURATION (e.g. 1h).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many (0: all).",
)
@click.option("-w", "--watch", is_flag=True, help="Keep the table live (Ctrl-C stops).")
@all_namespaces_option
@output_option()
@connection_options
def runs(**params: Any) -> None:
    """List runs, newest first, from Drover's history (runs whose TaskRun was cleaned up
    included)."""
    target = pop_target(params)
    fmt, wide = params["output"], params["output"] == "wide"
    everywhere = params["all_namespaces"]
    columns = run_columns(everywhere)
    phases = [
        next(p.value for p in Phase if p.value.lower() == x.lower()) for x in params["phases"]
    ]

    def listed(client: drover.Client) -> list[RunView]:
        found: Iterator[RunView] = client.runs(
            task=params["task"],
            phase=phases or None,
            tag=list(params["tags"]) or None,
            since=params["since"],
            all_namespaces=everywhere,
            page_size=min(params["limit"] or 500, 500),
        )
        return list(itertools.islice(found, params["limit"] or None))

    out = console()
    with target.client() as client:
        found = listed(client)
        if not params["watch"]:
            _print_runs(found, fmt, columns, wide)
            return
        if fmt not in ("table", "wide"):
            raise click.UsageError("--watch: only with -o table or -o wide")
        try:
            if out.is_terminal:
                with Live(
                    render_table(found, columns, wide), console=out, auto_refresh=False
                ) as live:
                    while True:
                        time.sleep(_WATCH_SECONDS)
                        live.update(render_table(listed(client), columns, wide), refresh=True)
            else:
                _watch_lines(client, listed, found, columns, wide)
        except KeyboardInterrupt:
            return


def _print_runs(found: list[RunView], fmt: str, columns: list[Column], wide: bool) -> None:
    if fmt == "name":
        for run in found:
            click.echo(run.name)
    elif fmt in ("json", "yaml"):
        emit({"items": found}, fmt)
    elif not found:
        console(stderr=True).print("No runs found.")
    else:
        show(render_table(found, columns, wide))


def _watch_lines(
    client: drover.Client,
    listed: Any,
    first: list[RunView],
    columns: list[Column],
    wide: bool,
) -> None:
    """Off a terminal, as `kubectl get -w`: the table, then a row for each run that appears
    or changes."""
    out = console()
    show(render_table(first, columns, wide), out)
    seen = {r.id: (r.phase, r.attempt) for r in first}
    while True:
        time.sleep(_WATCH_SECONDS)
        changed = [r for r in reversed(listed(client)) if seen.get(r.id) != (r.phase, r.attempt)]
        for run in changed:
            seen[run.id] = (run.phase, run.attempt)
        if changed:
            table = render_table(changed, columns, wide)
            table.show_header = False
            show(table, out)


@click.command()
@click.argument("name", metavar="RUN", shell_complete=run_names)
@click.option("-f", "--follow", "follow_", is_flag=True, help="Follow a live run to its end.")
@click.option("--attempt", type=click.IntRange(min=1), help="Only this attempt's lines.")
@click.option("--since", type=DURATION, help="Only lines logged in the last DURATION.")
@connection_options
def logs(name: str, **params: Any) -> None:
    """Print a run's log lines, from Drover's history: also after its pod is gone."""
    target = pop_target(params)
    cursor = LogCursor(attempt=params["attempt"], since=params["since"])
    out = console()
    with target.client() as client:
        if params["follow_"]:
            follow(client, name, logs=cursor, status=False)
            return
        client.get(name)  # an unknown run is an error, not an empty log
        cursor.drain(client, name, lambda line: out.print(log_line(line)))
