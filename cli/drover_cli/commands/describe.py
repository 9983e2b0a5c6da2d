"""`drover describe RUN`: everything about one run — phase, timing, payload, output or error,
metadata; its attempts with pods, exit codes and reasons; its steps as a timeline scaled to
the run; its waits; its child runs as a tree."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import click
from rich.bar import Bar
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

import drover
from drover.protocol.history import RunTimeline, StepView, WaitView
from drover.protocol.runs import RunView
from drover_cli.connect import connection_options, pop_target
from drover_cli.names import run_names
from drover_cli.output import (
    age,
    console,
    emit,
    now,
    phase_text,
    seconds_text,
    show,
    span,
    table,
    timestamp,
)

#: Child runs shown per run, and how deep the tree goes.
_CHILDREN, _DEPTH = 50, 3
_BAR_WIDTH = 30


def _fields(run: RunView) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")

    def row(label: str, value: RenderableType | None) -> None:
        if value not in (None, ""):
            grid.add_row(f"{label}:", value)

    row("Name", run.name)
    row("Namespace", run.namespace)
    row("Task", run.task)
    phase = phase_text(run.phase)
    if run.reason and run.reason != run.phase:
        phase.append(f"  {run.reason}", style="dim")
    row("Phase", phase)
    row("Message", run.message if run.message != run.reason else None)
    if run.waiting is not None:
        where = f" (position {run.waiting.position})" if run.waiting.position is not None else ""
        row("Waiting", f"{run.waiting.reason}: {run.waiting.message}{where}")
    row("Created", f"{timestamp(run.created_at)} ({age(run.created_at)} ago)")
    row("Started", timestamp(run.started_at) if run.started_at else None)
    row("Finished", timestamp(run.finished_at) if run.finished_at else None)
    row("Duration", span(run.started_at, run.finished_at) if run.started_at else None)
    row("Attempt", str(run.attempt) if run.attempt else None)
    row("Priority", str(run.priority) if run.priority else None)
    row("Concurrency key", run.concurrency_key)
    row("Tags", ", ".join(run.tags) or None)
    row("Parent", run.parent)
    row("Payload", _json(run.payload))
    if run.output is not None:
        row("Output", _json(run.output))
    if run.error:
        error = Text(f"{run.error.get('type', 'Error')}: {run.error.get('message', '')}", "red")
        trace = run.error.get("traceback")
        row("Error", Group(error, Text(trace.rstrip(), style="dim")) if trace else error)
    row("Metadata", _json(run.metadata) if run.metadata else None)
    return grid


def _json(value: Any) -> str:
    return json.dumps(value, indent=2) if isinstance(value, dict | list) else json.dumps(value)


def _attempts(timeline: RunTimeline) -> Table:
    grid = table("ATTEMPT", "POD", "STATE", "STARTED", "DURATION", "EXIT", "REASON", "MESSAGE")
    for a in timeline.attempts:
        number = str(a.attempt) if a.execution == a.attempt else f"{a.attempt} (pod {a.execution})"
        grid.add_row(
            number,
            a.pod,
            phase_text(a.state),
            timestamp(a.started_at),
            span(a.started_at, a.finished_at) if a.started_at else "-",
            "-" if a.exit_code is None else str(a.exit_code),
            a.reason or "",
            Text(" ".join((a.message or "").split())[:120], overflow="ellipsis"),
        )
    return grid


def steps_table(steps: list[StepView], start: dt.datetime | None, end: dt.datetime | None) -> Table:
    """The steps as a timeline: when each started (from the run's start), how long it took,
    and a bar placing it within the run."""
    grid = table("#", "NAME", "ATTEMPT", "START", "DURATION", "TIMELINE")
    origin = start or min((s.started_at or s.finished_at for s in steps), default=None)
    total = ((end or now()) - origin).total_seconds() if origin else 0.0
    for step in steps:
        began = step.started_at or step.finished_at
        offset = (began - origin).total_seconds() if origin else 0.0
        length = (step.finished_at - began).total_seconds()
        bar: RenderableType = (
            Bar(
                size=max(total, 1e-9),
                begin=offset,
                end=max(offset + length, offset + total / 200),
                width=_BAR_WIDTH,
                color="cyan",
            )
            if total > 0
            else ""
        )
        grid.add_row(
            str(step.seq),
            step.name,
            str(step.attempt),
            f"+{seconds_text(max(offset, 0.0))}",
            seconds_text(length),
            bar,
        )
    return grid


def _waits(waits: list[WaitView]) -> Table:
    grid = table("#", "KIND", "STATE", "SINCE", "WAITED", "ON")
    for w in waits:
        if w.kind == "Duration":
            on = f"until {timestamp(w.until)}"
        elif w.kind == "Token":
            on = f"token {w.token}"
        else:
            names = w.runs or []
            on = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        grid.add_row(
            str(w.seq),
            w.kind,
            w.state,
            timestamp(w.created_at),
            span(w.created_at, w.resolved_at),
            on,
        )
    return grid


def children_tree(client: drover.Client, run: RunView) -> Tree:
    """The run's children, and theirs, with their phases."""
    tree = Tree(Text.assemble((run.name, "bold"), " ", phase_text(run.phase)))
    _grow(client, tree, run, 1)
    return tree


def _grow(client: drover.Client, tree: Tree, run: RunView, depth: int) -> None:
    children = list(
        itertools.islice(client.runs(parent=run.name, page_size=_CHILDREN + 1), _CHILDREN + 1)
    )
    for child in reversed(children[:_CHILDREN]):  # oldest first, as they were started
        branch = tree.add(Text.assemble(child.name, f" ({child.task}) ", phase_text(child.phase)))
        if child.children and depth < _DEPTH:
            _grow(client, branch, child, depth + 1)
        elif child.children:
            branch.add(
                Text(f"{child.children} more child runs: drover describe {child.name}", "dim")
            )
    if len(children) > _CHILDREN:
        tree.add(Text(f"… {run.children - _CHILDREN} more: drover runs --parent {run.name}", "dim"))


def _child_list(client: drover.Client, run: RunView) -> list[dict[str, Any]]:
    found = itertools.islice(client.runs(parent=run.name, page_size=_CHILDREN), _CHILDREN)
    return [
        {"name": c.name, "task": c.task, "phase": c.phase, "children": c.children}
        for c in reversed(list(found))
    ]


@click.command()
@click.argument("name", metavar="RUN", shell_complete=run_names)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True
)
@connection_options
def describe(name: str, output: str, **params: Any) -> None:
    """Show a run: phase, timing, payload, output or error; attempts; a step timeline; waits;
    child runs."""
    target = pop_target(params)
    with target.client() as client:
        run = client.get(name)
        timeline = client.timeline(name)
        if output != "text":
            children = _child_list(client, run) if run.children else []
            emit({"run": run, "timeline": timeline, "children": children}, output)
            return
        out = console()
        show(_fields(run), out)
        sections: list[tuple[str, RenderableType]] = []
        if timeline.attempts:
            sections.append(("Attempts", _attempts(timeline)))
        if timeline.steps:
            sections.append(("Steps", steps_table(timeline.steps, run.started_at, run.finished_at)))
        if timeline.waits:
            sections.append(("Waits", _waits(timeline.waits)))
        if run.children:
            sections.append(("Children", children_tree(client, run)))
        for title, body in sections:
            out.print()
            out.print(Text(f"{title}:", style="bold"))
            show(body, out)
