"""The `drover` command (console scripts `drover` and `kubectl-drover`): the commands, and
errors as one line on stderr with an exit code (2 for usage errors)."""

from __future__ import annotations

import os
import sys

import click
from pydantic import ValidationError

import drover
from drover_cli.commands.completion import completion
from drover_cli.commands.dashboard import dashboard
from drover_cli.commands.describe import describe
from drover_cli.commands.history import logs, runs
from drover_cli.commands.tasks import tasks
from drover_cli.commands.tokens import tokens
from drover_cli.commands.trigger import cancel, replay, run
from drover_cli.connect import ConnectError
from drover_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, one_line
from drover_cli.output import console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(drover.__version__, prog_name="drover")
def cli() -> None:
    """Drover's command line: start runs and follow them, read the run history and logs,
    cancel, replay, complete waitpoint tokens, see each Task's load, and open the web
    dashboard.

    It connects like kubectl (the current kubeconfig context, or --context, --kubeconfig)
    and reaches the operator through the Kubernetes API server (api.drover.dev).
    """


for command in (run, runs, describe, logs, cancel, replay, tokens, tasks, dashboard, completion):
    cli.add_command(command)


def _fail(message: str, code: int) -> None:
    console(stderr=True).print(f"error: {message}", style="red", markup=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    # As a kubectl plugin (`kubectl drover`), show and complete as `kubectl drover`.
    invoked = os.path.basename(sys.argv[0])
    prog = "kubectl drover" if invoked.startswith("kubectl-") else "drover"
    try:
        cli.main(argv, prog_name=prog, complete_var="_DROVER_COMPLETE", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click.BadParameter as exc:
        if isinstance(exc, click.MissingParameter):
            _fail(exc.format_message(), EXIT_USAGE)
        # `--payload: not JSON: ...`: the flag, then what is wrong with its value.
        where = exc.param.get_error_hint(exc.ctx) if exc.param and exc.ctx else "argument"
        _fail(f"{where.strip(chr(39))}: {exc.message}", EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        _fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("interrupted", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except ValidationError as exc:
        _fail(one_line(exc), EXIT_USAGE)
    except (drover.ClientError, ConnectError) as exc:
        _fail(one_line(exc), EXIT_FAILED)


if __name__ == "__main__":
    main()
