"""Workflow calls for task code: child runs, durable waits and waitpoint tokens.

Each call takes the next position in the run's code, like a step, and its result is recorded
there: a retried or resumed run gets the recorded result back (a child is never started
twice, a timer never restarts). A wait that is not over suspends the run — the process exits
(`RunSuspended`), the pod is removed and the concurrency slot freed — and when the wait is
over a new pod replays the code to it and carries on. Short time waits (under the operator's
`DROVER_WAIT_SUSPEND_THRESHOLD`, default 10 s) sleep in the pod instead.

Every call has an `async` form (`trigger_async`, `wait_for_async`, ...) for `async def` task
code; the blocking forms must not be called from a running event loop's thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drover._state import AttemptState, current_state
from drover.errors import DroverError, NonDeterminismError, RunCanceled, RunSuspended, WaitTimeout
from drover.protocol.durations import parse_duration
from drover.protocol.runs import MAX_BATCH
from drover.protocol.workflows import (
    DEFAULT_TOKEN_TIMEOUT,
    ChildBatchRequest,
    Children,
    ChildRequest,
    Token,
    TokenRequest,
    WaitReply,
    WaitRequest,
)
from drover.requests import Duration, duration_text, trigger_body
from drover.results import RunHandle, RunResult


@dataclass(frozen=True)
class WaitToken:
    """A waitpoint token: a person or a system completes it by POSTing JSON to `url` (no
    other credential: the URL carries an unguessable secret — share it like one), through
    the API, or with `drover.Client.complete_token(id, data)`."""

    id: str
    url: str
    timeout_at: dt.datetime | None = None


@dataclass(frozen=True)
class TokenResult:
    """How a token wait ended: `ok` with the completion's `data`, or `timed_out`."""

    ok: bool
    data: Any = None
    timed_out: bool = False

    def unwrap(self) -> Any:
        """The completion's data; raises `drover.WaitTimeout` if the token timed out."""
        if not self.ok:
            raise WaitTimeout("the token timed out" if self.timed_out else "the token was canceled")
        return self.data


def _state(call: str) -> AttemptState:
    state = current_state()
    if state is None:
        raise DroverError(
            f"drover.{call}() works inside a Drover run; from applications use drover.Client"
        )
    return state


def _recorded(state: AttemptState, seq: int, name: str) -> Any:
    """The value recorded at `seq` if it is `name`'s; None if nothing is recorded."""
    recorded = state.recorded.get(seq)
    if recorded is None:
        return None
    if recorded.name != name:
        raise NonDeterminismError(
            f"position #{seq} is {recorded.name!r} in the run's history but the code now calls "
            f"{name!r}: the task's code path changed between attempts, so its history cannot be "
            "replayed"
        )
    return recorded.value


def _body(payload: Any, **options: Any) -> dict[str, Any]:
    """A child's trigger body, checked before anything is sent (`ValueError` naming the
    option)."""
    return trigger_body(payload, **options)


def _handles(state: AttemptState, items: list[dict[str, Any]]) -> list[RunHandle]:
    namespace = state.context.namespace
    return [
        RunHandle(name=item["name"], id=item["id"], namespace=namespace, task=item["task"])
        for item in items
    ]


# -- the calls, as blocking functions; the async forms run them off the event loop ----------


def _trigger(state: AttemptState, task: str, body: dict[str, Any]) -> RunHandle:
    state.check_canceled()
    seq = state.next_seq()
    recorded = _recorded(state, seq, f"trigger:{task}")
    if recorded is None:
        request = ChildRequest.model_validate({"seq": seq, "task": task, "run": body})
        recorded = Children.model_validate(state.request("/children", request)).model_dump()[
            "items"
        ]
    return _handles(state, recorded)[0]


def _batch(state: AttemptState, task: str, bodies: list[dict[str, Any]]) -> list[RunHandle]:
    state.check_canceled()
    seq = state.next_seq()
    recorded = _recorded(state, seq, f"batch:{task}")
    if recorded is None:
        request = ChildBatchRequest.model_validate({"seq": seq, "task": task, "items": bodies})
        reply = Children.model_validate(state.request("/children/batch", request))
        recorded = reply.model_dump()["items"]
    return _handles(state, recorded)


def _wait_step(kind: str) -> str:
    return f"wait:{kind.lower()}"


def _begin_wait(state: AttemptState, request: dict[str, Any]) -> tuple[Any, WaitRequest | None]:
    """Take the wait's position: (the recorded result, None) on a replay, else (None, the
    request to make)."""
    state.check_canceled()
    seq = state.next_seq()
    recorded = _recorded(state, seq, _wait_step(request["kind"]))
    if recorded is not None:
        return recorded, None
    return None, WaitRequest.model_validate({"seq": seq, **request})


def _ask(state: AttemptState, body: WaitRequest) -> WaitReply:
    """Ask whether the wait is over; raises `RunSuspended` when the run suspended on it."""
    state.flush_logs()  # a suspended execution's API takes no more lines
    reply = WaitReply.model_validate(state.request("/waits", body))
    if reply.state == "suspended":
        raise RunSuspended(f"suspended at position #{body.seq}")
    return reply


def _wait(state: AttemptState, request: dict[str, Any]) -> Any:
    """Wait at the next position: its result, once over. A short time wait sleeps here."""
    value, body = _begin_wait(state, request)
    if body is None:
        return value
    while True:
        reply = _ask(state, body)
        if reply.state == "resolved":
            return reply.value
        _sleep_in_pod(state, reply.sleep_seconds or 0.0)


def _sleep_in_pod(state: AttemptState, seconds: float) -> None:
    if state.canceled.wait(seconds):
        raise RunCanceled("the run was canceled or this attempt superseded")


def _results(value: list[dict[str, Any]]) -> list[RunResult]:
    return [
        RunResult(
            name=item.get("name") or item["id"],
            phase=item.get("phase") or "",
            output=item.get("output"),
            error=item.get("error"),
            id=item["id"],
            child=True,
        )
        for item in value
    ]


def _seconds(duration: Duration) -> float:
    if duration is None:
        raise ValueError("a duration is required")
    if isinstance(duration, dt.timedelta):
        return duration.total_seconds()
    if isinstance(duration, str):
        return parse_duration(duration).total_seconds()
    return float(duration)


def _until(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("wait_until needs an aware datetime (with a time zone)")
    return when


def _duration_request(
    seconds: float | None = None, until: dt.datetime | None = None
) -> dict[str, Any]:
    if seconds is not None and seconds < 0:
        raise ValueError(f"cannot wait a negative duration ({seconds} s)")
    return {"kind": "Duration", "seconds": seconds, "until": until}


def _token(state: AttemptState, body: dict[str, Any]) -> WaitToken:
    state.check_canceled()
    seq = state.next_seq()
    _recorded(state, seq, "token")  # a replay still asks: the URL is not recorded
    request = TokenRequest.model_validate({"seq": seq, **body})
    token = Token.model_validate(state.request("/tokens", request))
    return WaitToken(id=token.id, url=token.url, timeout_at=token.timeout_at)


def _token_result(value: dict[str, Any]) -> TokenResult:
    return TokenResult(
        ok=bool(value.get("ok")), data=value.get("data"), timed_out=bool(value.get("timedOut"))
    )


def _token_id(token: WaitToken | str) -> str:
    return token.id if isinstance(token, WaitToken) else str(token)


def _token_body(
    timeout: Duration, idempotency_key: str | None, tags: list[str] | None
) -> dict[str, Any]:
    values = {"timeout": duration_text(timeout), "idempotencyKey": idempotency_key, "tags": tags}
    return {k: v for k, v in values.items() if v is not None}


def _check_batch(payloads: Sequence[Any]) -> list[Any]:
    items = list(payloads)
    if len(items) > MAX_BATCH:
        raise ValueError(f"a batch has at most {MAX_BATCH} items, not {len(items)}")
    return items


# -- public API ----------------------------------------------------------------------------


def trigger(
    task: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    concurrency_key: str | None = None,
    priority: int | None = None,
    delay: Duration = None,
    ttl: Duration = None,
    tags: list[str] | dict[str, str] | None = None,
) -> RunHandle:
    """Start a child run of `task` (in this run's namespace) and return at once. The child
    is owned by this run (deleting or canceling this run ends it). Its payload is checked
    against the Task's `payloadSchema` here: a bad one raises `drover.InvalidRequestError`
    naming the field."""
    body = _body(
        payload,
        idempotency_key=idempotency_key,
        concurrency_key=concurrency_key,
        priority=priority,
        delay=delay,
        ttl=ttl,
        tags=tags,
    )
    return _trigger(_state("trigger"), task, body)


def trigger_and_wait(
    task: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    concurrency_key: str | None = None,
    priority: int | None = None,
    delay: Duration = None,
    ttl: Duration = None,
    tags: list[str] | dict[str, str] | None = None,
) -> RunResult:
    """Start a child run and wait for it to finish (suspending this run meanwhile)."""
    body = _body(
        payload,
        idempotency_key=idempotency_key,
        concurrency_key=concurrency_key,
        priority=priority,
        delay=delay,
        ttl=ttl,
        tags=tags,
    )
    state = _state("trigger_and_wait")
    handle = _trigger(state, task, body)
    return _results(_wait(state, {"kind": "Runs", "runs": [handle.id]}))[0]


def batch_trigger_and_wait(
    task: str,
    payloads: Sequence[Any],
    *,
    idempotency_key: str | None = None,
    concurrency_key: str | None = None,
    priority: int | None = None,
    delay: Duration = None,
    ttl: Duration = None,
    tags: list[str] | dict[str, str] | None = None,
) -> list[RunResult]:
    """Start a child run per payload (at most 1,000: more raise `ValueError` before anything
    is created) and wait for all of them; results in the order of `payloads`. With an
    `idempotency_key`, item `i` uses `<key>-<i>`."""
    items = _check_batch(payloads)
    options = {
        "idempotency_key": idempotency_key,
        "concurrency_key": concurrency_key,
        "priority": priority,
        "delay": delay,
        "ttl": ttl,
        "tags": tags,
    }
    state = _state("batch_trigger_and_wait")
    if not items:
        return []
    bodies = _batch_bodies(items, options)
    handles = _batch(state, task, bodies)
    return _results(_wait(state, {"kind": "Runs", "runs": [h.id for h in handles]}))


def _batch_bodies(items: list[Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """One body per item; with an idempotency key, item `i`'s is `<key>-<i>`."""
    key = options.get("idempotency_key")
    shared = {k: v for k, v in options.items() if k != "idempotency_key"}
    return [
        _body(item, idempotency_key=f"{key}-{i}" if key else None, **shared)
        for i, item in enumerate(items)
    ]


def wait_for(duration: Duration) -> None:
    """Wait `duration` (a `timedelta`, seconds, or a string such as `"90s"` or `"2h"`),
    counted from when the code first got here: a resumed or retried run does not wait
    again. Outside a Drover run it simply sleeps."""
    seconds = _seconds(duration)
    state = current_state()
    if state is None:
        time.sleep(max(seconds, 0.0))
        return
    _wait(state, _duration_request(seconds=seconds))


def wait_until(when: dt.datetime) -> None:
    """Wait until `when` (an aware `datetime`); a time in the past returns at once."""
    until = _until(when)
    state = current_state()
    if state is None:
        time.sleep(max((until - dt.datetime.now(dt.UTC)).total_seconds(), 0.0))
        return
    _wait(state, _duration_request(until=until))


def create_token(
    timeout: Duration = DEFAULT_TOKEN_TIMEOUT,
    *,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
) -> WaitToken:
    """A waitpoint token for a person or a system to complete; wait on it with
    `wait_for_token`. It times out after `timeout` (default 24 h)."""
    state = _state("create_token")
    return _token(state, _token_body(timeout, idempotency_key, tags))


def wait_for_token(token: WaitToken | str) -> TokenResult:
    """Wait until the token is completed (or times out), suspending this run meanwhile."""
    state = _state("wait_for_token")
    return _token_result(_wait(state, {"kind": "Token", "token": _token_id(token)}))


# -- async forms ---------------------------------------------------------------------------


async def _async_sleep(state: AttemptState, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.5))
        state.check_canceled()


async def _wait_async(state: AttemptState, request: dict[str, Any]) -> Any:
    """`_wait` with the HTTP calls off the event loop and the sleeps on it."""
    value, body = _begin_wait(state, request)
    if body is None:
        return value
    while True:
        reply = await asyncio.to_thread(_ask, state, body)
        if reply.state == "resolved":
            return reply.value
        await _async_sleep(state, reply.sleep_seconds or 0.0)


async def trigger_async(task: str, payload: Any = None, **options: Any) -> RunHandle:
    """`trigger`, for `async def` task code (same options)."""
    state = _state("trigger_async")
    body = _body(payload, **options)
    return await asyncio.to_thread(_trigger, state, task, body)


async def trigger_and_wait_async(task: str, payload: Any = None, **options: Any) -> RunResult:
    """`trigger_and_wait`, for `async def` task code (same options)."""
    state = _state("trigger_and_wait_async")
    body = _body(payload, **options)
    handle = await asyncio.to_thread(_trigger, state, task, body)
    return _results(await _wait_async(state, {"kind": "Runs", "runs": [handle.id]}))[0]


async def batch_trigger_and_wait_async(
    task: str, payloads: Sequence[Any], **options: Any
) -> list[RunResult]:
    """`batch_trigger_and_wait`, for `async def` task code (same options)."""
    items = _check_batch(payloads)
    state = _state("batch_trigger_and_wait_async")
    if not items:
        return []
    handles = await asyncio.to_thread(_batch, state, task, _batch_bodies(items, options))
    return _results(await _wait_async(state, {"kind": "Runs", "runs": [h.id for h in handles]}))


async def wait_for_async(duration: Duration) -> None:
    """`wait_for`, for `async def` task code."""
    seconds = _seconds(duration)
    state = current_state()
    if state is None:
        await asyncio.sleep(max(seconds, 0.0))
        return
    await _wait_async(state, _duration_request(seconds=seconds))


async def wait_until_async(when: dt.datetime) -> None:
    """`wait_until`, for `async def` task code."""
    until = _until(when)
    state = current_state()
    if state is None:
        await asyncio.sleep(max((until - dt.datetime.now(dt.UTC)).total_seconds(), 0.0))
        return
    await _wait_async(state, _duration_request(until=until))


async def create_token_async(
    timeout: Duration = DEFAULT_TOKEN_TIMEOUT,  # noqa: ASYNC109 - the token's lifetime
    *,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
) -> WaitToken:
    """`create_token`, for `async def` task code."""
    state = _state("create_token_async")
    return await asyncio.to_thread(_token, state, _token_body(timeout, idempotency_key, tags))


async def wait_for_token_async(token: WaitToken | str) -> TokenResult:
    """`wait_for_token`, for `async def` task code."""
    state = _state("wait_for_token_async")
    return _token_result(await _wait_async(state, {"kind": "Token", "token": _token_id(token)}))
