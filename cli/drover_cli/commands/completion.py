"""`drover completion bash|zsh`: the shell's completion script (commands, flags, and run and
Task names fetched from the API as you type)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  source <(drover completion bash)     (or into ~/.bashrc)
    zsh:   source <(drover completion zsh)      (after compinit)
    """
    root = ctx.find_root()
    prog = root.info_name or "drover"
    complete_class = get_completion_class(shell)
    assert complete_class is not None
    var = f"_{prog.replace('-', '_').upper()}_COMPLETE"
    click.echo(complete_class(root.command, {}, prog, var).source())
