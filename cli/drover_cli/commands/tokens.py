"""`drover tokens`: the waitpoint tokens runs wait on; `drover tokens complete ID` resumes
the waiting run with data."""

from __future__ import annotations

import sys
from typing import Any

import click

from drover_cli.connect import all_namespaces_option, connection_options, pop_target
from drover_cli.inputs import JSON_VALUE
from drover_cli.names import task_names
from drover_cli.output import Column, age, console, emit, now, output_option, render_table, show

TOKEN_COLUMNS = [
    Column("ID", lambda t: t.id),
    Column("RUN", lambda t: t.run),
    Column("TASK", lambda t: t.task or ""),
    Column("STATE", lambda t: t.state),
    Column("AGE", lambda t: age(t.created_at)),
    Column(
        "TIMES OUT", lambda t: f"in {age(now(), t.timeout_at)}" if t.state == "waiting" else "-"
    ),
    Column("TAGS", lambda t: ",".join(t.tags), True),
]
_STATES = ("waiting", "completed", "timed_out", "canceled", "all")


@click.group(invoke_without_command=True)
@click.option(
    "-t", "--task", metavar="TASK", shell_complete=task_names, help="Tokens of this Task's runs."
)
@click.option(
    "--state",
    type=click.Choice(_STATES),
    default="waiting",
    show_default=True,
    help="Which tokens.",
)
@all_namespaces_option
@output_option()
@connection_options
@click.pass_context
def tokens(ctx: click.Context, /, **params: Any) -> None:
    """List waitpoint tokens, newest first (by default those runs still wait on)."""
    if ctx.invoked_subcommand is not None:
        return
    target = pop_target(params)
    everywhere = params["all_namespaces"]
    with target.client() as client:
        found = client.tokens(
            state=None if params["state"] == "all" else params["state"],
            task=params["task"],
            all_namespaces=everywhere,
            limit=1000,
        )
    fmt = params["output"]
    if fmt == "name":
        for token in found:
            click.echo(token.id)
    elif fmt in ("json", "yaml"):
        emit({"items": found}, fmt)
    elif not found:
        console(stderr=True).print("No tokens found.")
    else:
        columns = list(TOKEN_COLUMNS)
        if everywhere:
            columns.insert(0, Column("NAMESPACE", lambda t: t.namespace))
        show(render_table(found, columns, fmt == "wide"))


@tokens.command()
@click.argument("token_id", metavar="ID")
@click.option("--data", type=JSON_VALUE, help="The data the run gets: JSON, @FILE or -.")
@output_option("name", "json", "yaml")
@connection_options
def complete(token_id: str, **params: Any) -> None:
    """Complete the token ID: the run waiting on it resumes with the data. The first
    completion wins; completing it again fails (exit 1) and changes nothing."""
    target = pop_target(params)
    with target.client() as client:
        state = client.complete_token(token_id, params["data"])
    fmt = params["output"]
    if fmt in ("json", "yaml"):
        emit(state, fmt)
    if not state.completed_now:
        console(stderr=True).print(
            f"error: token {state.id} was not completed now: it is {state.state}",
            style="red",
            markup=False,
        )
        sys.exit(1)
    if fmt == "name":
        console().print(f"{state.id} completed: run {state.run} resumes", markup=False)
