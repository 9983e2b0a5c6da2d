"""`python -m drover.runner` (console script `drover-runner`): run a Task's `entrypoint` in a
task pod.

The operator starts SDK task pods with this module and the environment it needs:
`DROVER_API_URL`, `DROVER_RUN_ID`, `DROVER_ATTEMPT`, `DROVER_TOKEN` (the attempt's credential,
from a Secret) and `DROVER_ENTRYPOINT` (`module:function`). The runner fetches the run's
context (payload, completed steps), calls the function with the payload — parsed into the
parameter's annotation when that is a pydantic model or dataclass — and reports the result
or the error. Exit codes: 0 done (or suspended on a durable wait); 1 failed (retried per the
Task's policy); 3 failed for good (AbortRun, non-determinism, bad payload); 64 misconfigured.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import ssl
import sys
import traceback
import typing
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from drover import _tracing
from drover._client import RunApi
from drover._state import AttemptState, LogShipper
from drover.errors import AbortRun, ApiError, NonDeterminismError, RunCanceled, RunSuspended
from drover.protocol.names import (
    ENV_API_CA,
    ENV_API_URL,
    ENV_ATTEMPT,
    ENV_ENTRYPOINT,
    ENV_RUN_ID,
    ENV_TOKEN,
    ENV_TRACEPARENT,
)
from drover.protocol.telemetry import JsonFormatter, json_requested, set_process_context
from drover.protocol.wire import Completion, Failure, RunContext

log = logging.getLogger("drover.runner")

EXIT_SUSPENDED = 0
EXIT_FAILED = 1
EXIT_FINAL = 3
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
    return typing.cast(Callable[..., Any], function)


def arguments(function: Callable[..., Any], payload: Any) -> list[Any]:
    """The payload as the function's first parameter, validated against its annotation."""
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters:
        return []
    hints = typing.get_type_hints(function)
    annotation = hints.get(parameters[0].name)
    if annotation is None or annotation is Any:
        return [payload]
    return [TypeAdapter(annotation).validate_python(payload)]


def _payload_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"payload{'.' + where if where else ''}: {first['msg']}"


def run_entrypoint(function: Callable[..., Any], args: list[Any]) -> Any:
    result = function(*args)
    if inspect.isawaitable(result):
        awaitable = result

        async def wait() -> Any:
            return await awaitable

        result = asyncio.run(wait())
    return result


def _report(state: AttemptState, failure: Failure) -> None:
    state.flush_logs()
    try:
        state.api.call("POST", "/fail", failure)
    except ApiError as exc:
        log.error("could not report the failure: %s", exc)


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    if json_requested():
        handler.setFormatter(JsonFormatter(span_ids=_tracing.current_ids))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _trace_id() -> str | None:
    parts = os.environ.get(ENV_TRACEPARENT, "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _terminated(signum: int, _frame: object) -> None:
    # Stop as the default action would (a task pod deleted or its run canceled), but through
    # Python, so `finally` blocks run. Needed explicitly: as a container's PID 1 the runner
    # would otherwise ignore SIGTERM and wait out the grace period.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    _configure_logging()
    env = {k: os.environ.get(k, "") for k in (ENV_API_URL, ENV_RUN_ID, ENV_TOKEN, ENV_ENTRYPOINT)}
    missing = [k for k, v in env.items() if not v]
    if missing:
        print(f"drover-runner: missing environment: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    attempt = os.environ.get(ENV_ATTEMPT, "")
    set_process_context(
        run_id=env[ENV_RUN_ID],
        attempt=int(attempt) if attempt.isdigit() else None,
        trace_id=_trace_id(),
    )
    api = RunApi(
        env[ENV_API_URL], env[ENV_RUN_ID], env[ENV_TOKEN], ca=os.environ.get(ENV_API_CA, "")
    )
    try:
        context = RunContext.model_validate(api.call("GET", "/context"))
    except ApiError as exc:
        print(f"drover-runner: {exc}", file=sys.stderr)
        return EXIT_FINAL if exc.status == 409 else EXIT_FAILED
    except ssl.SSLError as exc:
        print(f"drover-runner: the run API at {env[ENV_API_URL]}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    api.speak(context.protocol)
    shipper = LogShipper(api)
    state = AttemptState(api, context, shipper)
    logging.getLogger().addHandler(shipper)
    set_process_context(namespace=context.namespace, task=context.task, run=context.name)
    _tracing.setup_runner(
        {
            "drover.namespace": context.namespace,
            "drover.task": context.task,
            "drover.run.id": context.run_id,
            "drover.run.name": context.name,
            "drover.attempt": context.attempt,
        }
    )
    state.activate()
    try:
        return _run(state, env[ENV_ENTRYPOINT])
    finally:
        state.stop()
        shipper.close()
        _tracing.shutdown()


def _run(state: AttemptState, entrypoint: str) -> int:
    try:
        function = load(entrypoint)
        args = arguments(function, state.context.payload)
    except ValidationError as exc:
        _report(
            state, Failure(type="InvalidPayload", message=_payload_problem(exc), retryable=False)
        )
        return EXIT_FINAL
    except Exception as exc:
        _report(
            state,
            Failure(
                type=type(exc).__name__,
                message=str(exc),
                traceback=traceback.format_exc(),
                retryable=False,
            ),
        )
        return EXIT_FINAL
    try:
        result = run_entrypoint(function, args)
        state.flush_logs()
        state.api.call("POST", "/complete", Completion(output=to_jsonable_python(result)))
        return 0
    except AbortRun as exc:
        _report(state, Failure(type="AbortRun", message=exc.message, retryable=False))
        return EXIT_FINAL
    except NonDeterminismError as exc:
        _report(state, Failure(type="NonDeterminismError", message=str(exc), retryable=False))
        return EXIT_FINAL
    except RunCanceled as exc:
        log.warning("stopping: %s", exc)
        return EXIT_FAILED
    except RunSuspended as exc:
        # Not a result: the operator already ended this execution and freed its slot; a
        # new pod replays the code to the wait once it is over.
        log.info("%s: exiting until the wait is over", exc)
        return EXIT_SUSPENDED
    except Exception as exc:
        log.exception("the task failed")
        _report(
            state,
            Failure(
                type=type(exc).__name__,
                message=str(exc)[:32768],
                traceback=traceback.format_exc()[-65536:],
                retryable=True,
            ),
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
