"""The run lifecycle's rules, as pure functions: who gets a slot, what an admitted attempt
looks like, and what a finished attempt means for its run (retry or finish).

The store calls these inside its transactions (it reads under lock, asks, then writes what
was decided), so every rule here is applied atomically and can be unit-tested without a
database.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from drover.protocol.phases import Phase
from drover_operator.crd import TaskSpec, parse_duration
from drover_operator.domain.attempts import AttemptState, Outcome
from drover_operator.domain.pods import pod_name
from drover_operator.domain.tokens import attempt_token, token_hash

#: History lines kept in Postgres only, never posted as Kubernetes Events: every run has
#: them, the TaskRun's status already says so, and two Events per run were a third of the
#: operator's API requests (docs/decisions.md, "Events a user reads").
HISTORY_ONLY_REASONS = frozenset({"Queued", "Admitted"})


@dataclass(frozen=True)
class EventRecord:
    """A line of a run's history, posted as a Kubernetes Event after commit (unless it is
    `history_only`)."""

    type: str  # Normal | Warning
    reason: str
    message: str
    attempt: int | None = None

    @property
    def history_only(self) -> bool:
        return self.type == "Normal" and self.reason in HISTORY_ONLY_REASONS


# -- admission ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    """Why a run that could start does not get a slot (shown in its status)."""

    reason: str  # ConcurrencyLimit | PerKeyLimit
    message: str


@dataclass
class Slots:
    """The free concurrency slots of one Task during one admission transaction.

    `free` None: no limit. Per-key usage counts only keys under `per_key_limit`.
    """

    free: int | None
    per_key_limit: int | None = None
    per_key: dict[str, int] = field(default_factory=dict)
    limit: int | None = None

    @classmethod
    def of(cls, spec: TaskSpec, active: int, per_key: dict[str, int]) -> Slots:
        limit = spec.concurrency.limit if spec.concurrency else None
        per_key_limit = spec.concurrency.per_key_limit if spec.concurrency else None
        return cls(
            free=None if limit is None else max(0, limit - active),
            per_key_limit=per_key_limit,
            per_key=dict(per_key),
            limit=limit,
        )

    def wait(self, concurrency_key: str | None) -> Wait | None:
        """Why a run with this key gets no slot now; None if it would get one."""
        if (
            concurrency_key is not None
            and self.per_key_limit is not None
            and self.per_key.get(concurrency_key, 0) >= self.per_key_limit
        ):
            return Wait(
                "PerKeyLimit",
                f"waiting for a slot: concurrency.perKeyLimit {self.per_key_limit} reached"
                f" for key {concurrency_key}",
            )
        if self.full:
            return Wait(
                "ConcurrencyLimit",
                f"waiting for a slot: concurrency.limit {self.limit} reached",
            )
        return None

    @property
    def full(self) -> bool:
        return self.free is not None and self.free <= 0

    @property
    def page_size(self) -> int:
        """How many waiting runs to look at next: keys at their limit are skipped, so look
        further than the free slots."""
        return 200 if self.free is None else max(self.free * 4, 200)

    def take(self, concurrency_key: str | None) -> bool:
        """Take a slot for a run with this key; False when none is free for it."""
        if self.wait(concurrency_key) is not None:
            return False
        if concurrency_key is not None and self.per_key_limit is not None:
            self.per_key[concurrency_key] = self.per_key.get(concurrency_key, 0) + 1
        if self.free is not None:
            self.free -= 1
        return True


@dataclass(frozen=True)
class AttemptPlan:
    """Everything an admitted attempt is recorded with."""

    pod_name: str
    task_spec: dict[str, Any]
    pending: dt.timedelta
    token_hash: str | None
    heartbeat_timeout: dt.timedelta | None
    max_duration: dt.timedelta | None
    event: EventRecord
    #: The slot stays taken after the attempt ends, until its pod is gone (`PodGone`).
    holds_pod: bool = False


def plan_attempt(
    spec: TaskSpec,
    raw_spec: dict[str, Any],
    *,
    run_id: str,
    run_name: str,
    try_number: int,
    execution: int,
    resumed: bool = False,
    executed: dt.timedelta = dt.timedelta(0),
    default_pending: dt.timedelta,
    signing_key: bytes | None,
) -> AttemptPlan:
    """Execution `execution` of the run, in its attempt `try_number`, as admission records
    it: a new attempt, or (`resumed`) the same attempt continuing after a wait, with what is
    left of its `maxDuration` after the `executed` time so far."""
    pending = parse_duration(spec.timeouts.pending) if spec.timeouts.pending else default_pending
    token = attempt_token(signing_key, run_id, execution) if signing_key is not None else None
    limit = max_duration(spec)
    if limit is not None and resumed:
        limit = max(limit - executed, dt.timedelta(seconds=1))
    if resumed:
        event = EventRecord("Normal", "Resumed", f"attempt {try_number} resumed", try_number)
    else:
        message = f"attempt {try_number} of {spec.retry.max_attempts} admitted"
        event = EventRecord("Normal", "Admitted", message, try_number)
    return AttemptPlan(
        pod_name=pod_name(run_name, run_id, try_number, execution if resumed else None),
        task_spec=raw_spec,
        pending=pending,
        token_hash=token_hash(token) if token is not None else None,
        # Only SDK tasks beat; a plain command is watched through its pod alone.
        heartbeat_timeout=parse_duration(spec.timeouts.heartbeat) if spec.entrypoint else None,
        max_duration=limit,
        event=event,
        holds_pod=spec.concurrency is not None and spec.concurrency.slot_release == "PodGone",
    )


def max_duration(spec: TaskSpec) -> dt.timedelta | None:
    return parse_duration(spec.timeouts.max_duration) if spec.timeouts.max_duration else None


# -- finishing an attempt ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunEnd:
    """What the run does after an attempt ended: retry after `retry_in`, or finish with
    `phase`; with the error and history lines to record."""

    phase: Phase
    retry_in: dt.timedelta | None
    error: dict[str, Any] | None
    events: tuple[EventRecord, ...]

    @property
    def retrying(self) -> bool:
        return self.phase == Phase.RETRYING


def next_phase(
    spec: TaskSpec, attempt: int, outcome: Outcome, rng: random.Random | None = None
) -> tuple[Phase, dt.timedelta | None]:
    """Retry per the Task's policy (and after how long), or the final phase."""
    if outcome.state == AttemptState.SUCCEEDED:
        return Phase.SUCCEEDED, None
    if outcome.retryable and attempt < spec.retry.max_attempts:
        jitter = (rng or random).uniform(1.0, 2.0)
        return Phase.RETRYING, spec.retry.backoff(attempt, jitter)
    return (Phase.TIMED_OUT if outcome.state == AttemptState.TIMED_OUT else Phase.FAILED), None


def end_of_attempt(
    spec: TaskSpec, number: int, outcome: Outcome, rng: random.Random | None = None
) -> RunEnd:
    """The decision recorded when attempt `number` (the try, not the execution) ends with
    `outcome`."""
    phase, retry_in = next_phase(spec, number, outcome, rng)
    error = None
    if phase != Phase.SUCCEEDED:
        error = {
            "type": outcome.reason,
            "message": outcome.message,
            "retryable": outcome.retryable,
            **({"traceback": outcome.traceback} if outcome.traceback else {}),
        }
    if retry_in is not None:
        events: tuple[EventRecord, ...] = (
            EventRecord(
                "Warning", "AttemptFailed", f"attempt {number} failed: {outcome.message}", number
            ),
            EventRecord(
                "Normal",
                "RetryScheduled",
                f"attempt {number + 1} in {retry_in.total_seconds():.1f}s",
                number,
            ),
        )
    else:
        events = (
            EventRecord(
                "Normal" if phase == Phase.SUCCEEDED else "Warning",
                phase,
                f"run {phase.lower()} after {number} attempt(s): {outcome.message}",
                number,
            ),
        )
    return RunEnd(phase, retry_in, error, events)
