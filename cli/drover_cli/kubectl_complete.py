"""`kubectl_complete-drover`: completion of `kubectl drover ...` in kubectl's own shell
completion. kubectl (1.26 and later) runs this executable with the words after `kubectl
drover`, the last one being the word to complete, and reads Cobra's answer: one candidate a
line, then `:<directive>`."""

from __future__ import annotations

import sys

from click.shell_completion import ShellComplete

from drover_cli.main import cli

#: Cobra's ShellCompDirectiveNoFileComp: offer no file names.
NO_FILES = 4


def main() -> None:
    args = sys.argv[1:]
    incomplete = args.pop() if args else ""
    completer = ShellComplete(cli, {}, "kubectl drover", "_DROVER_COMPLETE")
    for item in completer.get_completions(args, incomplete):
        help_text = f"\t{item.help}" if item.help else ""
        print(f"{item.value}{help_text}")
    print(f":{NO_FILES}")


if __name__ == "__main__":
    main()
