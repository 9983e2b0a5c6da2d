"""`drover run`, `drover replay` and `drover cancel`: start runs (and follow them to their
end), start one again, stop them."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import click
from rich.text import Text

import drover
from drover.protocol.phases import FINISHED_PHASES, Phase
from drover_cli.connect import Target, connection_options, pop_target
from drover_cli.errors import one_line
from drover_cli.follow import LogCursor, WaitTimeoutError, exit_code, final_line, follow
from drover_cli.inputs import DURATION, JSON_VALUE, TAG
from drover_cli.names import run_names, task_names
from drover_cli.output import console, emit, phase_text

_PAYLOAD_HELP = "The run's payload: JSON, @FILE (a file's JSON) or - (standard input)."


def follow_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--wait",
                is_flag=True,
                help="Follow the run to its end; exit 0 if it succeeded, 1 if not.",
            ),
            click.option("--logs", is_flag=True, help="Print its logs meanwhile (implies --wait)."),
            click.option(
                "--timeout",
                type=DURATION,
                help="With --wait: give up after this long (exit 124); the run goes on.",
            ),
            click.option(
                "-o",
                "--output",
                type=click.Choice(["name", "json", "yaml"]),
                default="name",
                show_default=True,
                help="How to print the started run.",
            ),
        ]
    ):
        command = option(command)
    return command


def _check_follow(params: dict[str, Any]) -> None:
    """Refuse flag combinations before anything is started."""
    if params["timeout"] is not None and not (params["wait"] or params["logs"]):
        raise click.UsageError("--timeout: only with --wait or --logs")


def _started(target: Target, name: str, view: Any, params: dict[str, Any]) -> None:
    """Print the started run; with --wait/--logs follow it and exit with its outcome."""
    if params["output"] == "name":
        click.echo(name)
    else:
        emit(view, params["output"])
    if not (params["wait"] or params["logs"]):
        return
    started = time.monotonic()
    with target.client() as client:
        try:
            run = follow(
                client,
                name,
                timeout=params["timeout"],
                logs=LogCursor() if params["logs"] else None,
            )
        except WaitTimeoutError as still:
            seconds = params["timeout"].total_seconds()
            console(stderr=True).print(
                f"error: timed out after {seconds:g}s: run {name} is still {still}; it goes on"
                f" (drover cancel {name} stops it)",
                style="red",
                markup=False,
            )
            sys.exit(124)
    err = console(stderr=True)
    # On a terminal the live line is gone: leave how the run ended. Elsewhere the last
    # status line said it; add why a run that did not succeed ended so.
    if err.is_terminal or run.phase != Phase.SUCCEEDED:
        err.print(final_line(run, time.monotonic() - started, status=err.is_terminal))
    sys.exit(exit_code(run))


@click.command()
@click.argument("task", shell_complete=task_names)
@click.option("--payload", type=JSON_VALUE, help=_PAYLOAD_HELP)
@click.option(
    "--key", "idempotency_key", metavar="KEY", help="An idempotency key: one run per key."
)
@click.option("--concurrency-key", metavar="KEY", help="Counts against the Task's perKeyLimit.")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Higher starts first.")
@click.option("--delay", type=DURATION, help="Not before this long from now (e.g. 10m).")
@click.option(
    "--tag", "tags", type=TAG, multiple=True, help="A tag, key or key=value (repeatable)."
)
@follow_options
@connection_options
def run(task: str, **params: Any) -> None:
    """Start a run of TASK and print its name.

    \b
    drover run send-invoice --payload '{"invoice": 42}'
    drover run send-invoice --payload @invoice.json --wait --logs --timeout 10m
    """
    _check_follow(params)
    target = pop_target(params)
    delay: dt.timedelta | None = params.pop("delay")
    with target.client() as client:
        handle = client.trigger(
            task,
            params.pop("payload"),
            idempotency_key=params.pop("idempotency_key"),
            concurrency_key=params.pop("concurrency_key"),
            priority=params.pop("priority"),
            delay=delay,
            tags=list(params.pop("tags")) or None,
        )
        view = client.get(handle.name) if params["output"] != "name" else None
    if handle.cached:
        console(stderr=True).print(
            f"the key is bound to run {handle.name}: not started again", style="yellow"
        )
    _started(target, handle.name, view, params)


@click.command()
@click.argument("name", metavar="RUN", shell_complete=run_names)
@click.option("--payload", type=JSON_VALUE, help=f"{_PAYLOAD_HELP} Default: the original's.")
@follow_options
@connection_options
def replay(name: str, **params: Any) -> None:
    """Start a new run like RUN: same Task and options (and payload, unless given)."""
    _check_follow(params)
    target = pop_target(params)
    with target.client() as client:
        handle = client.replay(name, params.pop("payload"))
        view = client.get(handle.name) if params["output"] != "name" else None
    _started(target, handle.name, view, params)


@click.command()
@click.argument("names", metavar="RUN...", nargs=-1, required=True, shell_complete=run_names)
@connection_options
def cancel(names: tuple[str, ...], **params: Any) -> None:
    """Cancel runs: waiting ones never start, running ones are stopped."""
    target = Target(**params)
    out, err = console(), console(stderr=True)
    failed = 0
    with target.client() as client:
        for name in names:
            try:
                view = client.cancel(name)
            except drover.ClientError as exc:
                failed += 1
                err.print(f"error: {one_line(exc)}", style="red", markup=False)
                continue
            pending = "" if view.phase in FINISHED_PHASES else " (cancel requested)"
            out.print(Text.assemble(view.name, " ", phase_text(view.phase), pending))
    if failed:
        sys.exit(1)
