"""Durable waits, as records and pure rules: what a waitpoint is, what a suspended run shows
in `status.waitingFor`, and the names its results are recorded under.

A waitpoint is a position in a run's code (its `seq`, shared with steps) that waits on a
time (`Duration`), a token (`Token`) or other runs (`Runs`). Its result, once over, is
recorded as the step at that position, so a resumed or retried run replays it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from drover_operator.domain.records import AttemptRecord, RunRecord


class WaitKind(StrEnum):
    DURATION = "Duration"
    TOKEN = "Token"
    RUNS = "Runs"


class TokenState(StrEnum):
    WAITING = "waiting"
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    #: Its run was canceled before anyone completed it.
    CANCELED = "canceled"


#: The steps recording workflow calls: a wait's result, a child trigger, a token creation.
def wait_step(kind: str) -> str:
    return f"wait:{kind.lower()}"


def trigger_step(task: str) -> str:
    return f"trigger:{task}"


def batch_step(task: str) -> str:
    return f"batch:{task}"


TOKEN_STEP = "token"


def child_key(parent_id: str, seq: int, index: int | None = None) -> str:
    """The idempotency key a child run is started under: its parent and position, so the
    same call made again (a retry, a replay, a lost answer) finds the same child."""
    return f"child:{parent_id}:{seq}" if index is None else f"child:{parent_id}:{seq}:{index}"


@dataclass(frozen=True)
class Waitpoint:
    run_id: str
    seq: int
    kind: str
    wake_at: dt.datetime | None
    token_id: str | None
    runs: list[str] | None
    state: str
    created_at: dt.datetime
    #: When the wait was over (resolver reads only): the wake time, the token's completion
    #: or timeout, the last awaited run's end.
    due_at: dt.datetime | None = None


@dataclass(frozen=True)
class AwaitedRun:
    """A run a `Runs` waitpoint waits on; `finished` false until it is recorded and over."""

    ord: int
    id: str
    name: str | None
    phase: str | None
    output: Any
    error: dict[str, Any] | None
    finished: bool


@dataclass(frozen=True)
class Waited:
    """What a wait call gets: `resolved` with `value`, `sleep` for `sleep_seconds` (then ask
    again), or `suspended` (the execution ended; the process must exit)."""

    state: str
    value: Any = None
    sleep_seconds: float | None = None
    run: RunRecord | None = None
    attempt: AttemptRecord | None = None


@dataclass(frozen=True)
class Resumed:
    """A suspended run queued again because its wait is over; `due_at` is when it was
    over (the wake time, or when its token or last child finished)."""

    run_id: str
    namespace: str
    task: str
    seq: int
    kind: str
    due_at: dt.datetime | None


@dataclass(frozen=True)
class TokenRecord:
    """A waitpoint token as the API shows it."""

    id: str
    namespace: str
    run_id: str
    run: str
    task: str
    seq: int
    state: str
    data: Any
    tags: list[str] | None
    created_at: dt.datetime
    timeout_at: dt.datetime
    completed_at: dt.datetime | None


def waiting_for(point: Waitpoint, names: list[str] | None) -> dict[str, Any]:
    """`status.waitingFor` of a run suspended on `point`."""
    if point.kind == WaitKind.DURATION:
        assert point.wake_at is not None
        return {"kind": WaitKind.DURATION.value, "until": point.wake_at.isoformat()}
    if point.kind == WaitKind.TOKEN:
        return {"kind": WaitKind.TOKEN.value, "token": point.token_id}
    return {"kind": WaitKind.RUNS.value, "runs": names or []}


def suspend_message(point: Waitpoint, names: list[str] | None) -> str:
    if point.kind == WaitKind.DURATION:
        assert point.wake_at is not None
        return f"suspended until {point.wake_at.isoformat()}"
    if point.kind == WaitKind.TOKEN:
        return f"suspended until token {point.token_id} is completed or times out"
    shown = ", ".join((names or [])[:5])
    more = f" and {len(names or []) - 5} more" if len(names or []) > 5 else ""
    return f"suspended until {len(names or [])} run(s) finish: {shown}{more}"


def token_value(token: TokenRecord) -> dict[str, Any]:
    """A finished token's result, as its wait records it."""
    timed_out = token.state == TokenState.TIMED_OUT
    return {
        "ok": token.state == TokenState.COMPLETED,
        "data": token.data,
        "timedOut": timed_out,
        "state": token.state,
    }


def runs_value(awaited: list[AwaitedRun]) -> list[dict[str, Any]]:
    """The awaited runs' outcomes, in the order awaited, as their wait records them."""
    return [
        {"name": a.name, "id": a.id, "phase": a.phase, "output": a.output, "error": a.error}
        for a in awaited
    ]
