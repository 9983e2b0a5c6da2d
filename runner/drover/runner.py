"""`python -m drover.runner`: run a Task's `entrypoint` inside a task pod.

The operator starts every SDK task's pod with this module and tells it what to run through
the environment: `DROVER_ENTRYPOINT` (`module:function`) and `DROVER_PAYLOAD` (JSON). The
function is called with the payload (or with no argument if it takes none); sync and async
functions both work. Exit code 0 means success; an exception fails the attempt (exit 1),
and the operator retries it per the Task's policy.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("drover.runner")

EXIT_FAILED = 1
EXIT_USAGE = 64


def load(entrypoint: str) -> Callable[..., Any]:
    module_name, _, function_name = entrypoint.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"entrypoint {entrypoint!r} is not of the form module:function")
    # As with `python -m`, the working directory is importable: the task's code lives there.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"entrypoint {entrypoint!r} is not callable")
    return function  # type: ignore[no-any-return]


def call(function: Callable[..., Any], payload: Any) -> Any:
    takes_argument = bool(inspect.signature(function).parameters)
    result = function(payload) if takes_argument else function()
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    entrypoint = os.environ.get("DROVER_ENTRYPOINT")
    if not entrypoint:
        print("drover.runner: DROVER_ENTRYPOINT is not set", file=sys.stderr)
        return EXIT_USAGE
    try:
        payload = json.loads(os.environ.get("DROVER_PAYLOAD") or "null")
        result = call(load(entrypoint), payload)
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    log.info("run finished: %s", json.dumps(result, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
