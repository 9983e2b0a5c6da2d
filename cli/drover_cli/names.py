"""Shell completion of run and Task names: asks the API with the flags typed so far, and
offers nothing (silently) when it cannot answer."""

from __future__ import annotations

import itertools
from typing import Any

import click
from click.shell_completion import CompletionItem

from drover_cli.connect import target_of

_MAX = 200


def _params(ctx: click.Context) -> dict[str, Any]:
    return {k: v for k, v in ctx.params.items() if v is not None}


def run_names(ctx: click.Context, _: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The newest runs of the namespace whose names start with what is typed."""
    try:
        with target_of(_params(ctx)).client() as client:
            runs = itertools.islice(client.runs(page_size=_MAX), _MAX)
            return [
                CompletionItem(r.name, help=f"{r.task} {r.phase}")
                for r in runs
                if r.name.startswith(incomplete)
            ]
    except Exception:
        return []


def task_names(ctx: click.Context, _: click.Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        with target_of(_params(ctx)).client() as client:
            return [
                CompletionItem(t.name)
                for t in client.tasks().items
                if t.name.startswith(incomplete)
            ]
    except Exception:
        return []
