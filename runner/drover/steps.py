"""`@drover.step`: durable steps. A step's result is checkpointed with its position in the
run and its name; a later attempt gets the stored result back instead of running it again."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, overload

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from drover import _tracing
from drover._state import AttemptState, current_state
from drover.errors import CheckpointTooLargeError, NonDeterminismError
from drover.protocol.wire import MAX_STEP_VALUE_BYTES, StepRecord

P = ParamSpec("P")
R = TypeVar("R")


def _encode(value: Any, name: str, limit: int) -> str:
    """The value as compact JSON, checked against the checkpoint size cap."""
    encoded = json.dumps(to_jsonable_python(value), separators=(",", ":"))
    if len(encoded) > limit:
        raise CheckpointTooLargeError(
            f"step {name!r} returned {len(encoded)} bytes of JSON; checkpoints are limited to "
            f"{limit} bytes: store large data elsewhere (e.g. object storage) and return a "
            "reference"
        )
    return encoded


def _decoder(function: Callable[..., Any]) -> Callable[[Any], Any]:
    """Turns a stored JSON value back into the step's declared return type."""
    try:
        annotation = typing.get_type_hints(function).get("return")
    except Exception:
        annotation = None
    if annotation is None or annotation is Any:
        return lambda value: value
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return adapter.validate_python


def _span(name: str, seq: int, *, replayed: bool = False) -> AbstractContextManager[Any]:
    """A `drover.step` span when tracing is on; otherwise a no-op costing ~100 ns."""
    if _tracing.active():
        return _tracing.step_span(name, seq, replayed=replayed)
    return contextlib.nullcontext()


def _replay(state: AttemptState, seq: int, name: str) -> StepRecord | None:
    recorded = state.recorded.get(seq)
    if recorded is not None and recorded.name != name:
        raise NonDeterminismError(
            f"step #{seq} was {recorded.name!r} in an earlier attempt but the code now calls "
            f"{name!r}: the task's code path changed between attempts, so its checkpoints "
            "cannot be replayed"
        )
    return recorded


@overload
def step(function: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def step(
    name: str | None = None, /, *, max_bytes: int = MAX_STEP_VALUE_BYTES
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def step(
    function_or_name: Callable[P, R] | str | None = None,
    /,
    *,
    max_bytes: int = MAX_STEP_VALUE_BYTES,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Make a function a durable step: `@drover.step`, `@drover.step("name")`.

    Sync and async functions both work. Outside a Drover run the function simply runs.
    Values must be JSON-serialisable (pydantic models and dataclasses are fine); a value
    larger than `max_bytes` fails the step with `CheckpointTooLargeError`.
    """
    if callable(function_or_name):
        return _wrap(function_or_name, None, max_bytes)

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        return _wrap(function, function_or_name, max_bytes)

    return decorate


def _wrap(function: Callable[P, R], name: str | None, max_bytes: int) -> Callable[P, R]:
    step_name = name or function.__qualname__
    decode = _decoder(function)

    if inspect.iscoroutinefunction(function):
        async_function = typing.cast(Callable[P, Awaitable[Any]], function)

        @functools.wraps(function)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            state = current_state()
            if state is None:
                return await async_function(*args, **kwargs)
            state.check_canceled()
            seq = state.next_seq()
            recorded = _replay(state, seq, step_name)
            if recorded is not None:
                with _span(step_name, seq, replayed=True):
                    return decode(recorded.value)
            with _span(step_name, seq):
                started = datetime.now(UTC)
                result = await async_function(*args, **kwargs)
                state.checkpoint(seq, step_name, _encode(result, step_name, max_bytes), started)
                return result

        return typing.cast(Callable[P, R], run_async)

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        state = current_state()
        if state is None:
            return function(*args, **kwargs)
        state.check_canceled()
        seq = state.next_seq()
        recorded = _replay(state, seq, step_name)
        if recorded is not None:
            with _span(step_name, seq, replayed=True):
                return typing.cast(R, decode(recorded.value))
        with _span(step_name, seq):
            started = datetime.now(UTC)
            result = function(*args, **kwargs)
            state.checkpoint(seq, step_name, _encode(result, step_name, max_bytes), started)
            return result

    return run
