"""What a pod's status means for its attempt (pure functions over pod dicts and Task specs,
so every rule is unit-testable)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from drover.protocol.timestamps import parse_rfc3339
from drover_operator.crd import TaskSpec

#: The container the operator puts the task in (a `podTemplate` may add others).
CONTAINER = "task"
# `drover.runner` exits 3 when the run must not be retried (AbortRun, non-determinism, a bad
# payload); it normally reports that through the API first, this covers an unreachable API.
RUNNER_EXIT_FINAL = 3


class AttemptState(StrEnum):
    """An execution's state in the store; the last six are final."""

    ADMITTED = "Admitted"
    """Holds a slot; its pod is being created or has not started."""
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    CANCELED = "Canceled"
    LOST = "Lost"
    """Its pod vanished or its heartbeats stopped: retryable."""
    SUSPENDED = "Suspended"
    """The code reached a long wait: the pod exits and the slot is free; the attempt goes
    on in a new execution when the wait is over."""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    state: AttemptState
    reason: str
    message: str
    retryable: bool
    exit_code: int | None = None
    # Reported by the SDK runner through the API.
    output: Any = None
    traceback: str | None = None


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next(
        (s for s in statuses if s.get("name") == CONTAINER), statuses[0] if statuses else {}
    )


def started_at(pod: dict[str, Any]) -> dt.datetime | None:
    """When the task container started, if it has."""
    state = _container_status(pod).get("state") or {}
    for key in ("running", "terminated"):
        if key in state:
            return parse_rfc3339(state[key].get("startedAt"))
    return None


def pod_outcome(pod: dict[str, Any], task: TaskSpec) -> Outcome | None:
    """The attempt's outcome once its pod is finished; None while it is not."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return Outcome(
            AttemptState.SUCCEEDED, "Completed", "exit code 0", retryable=False, exit_code=0
        )
    if phase != "Failed":
        return None
    if status.get("reason") == "DeadlineExceeded":
        limit = task.timeouts.max_duration
        return Outcome(
            AttemptState.TIMED_OUT,
            "TimedOut",
            f"attempt exceeded maxDuration {limit}",
            retryable=True,
        )
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    if code is None:
        reason = status.get("reason") or "PodFailed"
        message = status.get("message") or "the pod failed"
        return Outcome(AttemptState.LOST, reason, message, retryable=True)
    non_retryable = set(task.retry.non_retryable_exit_codes or [])
    if task.entrypoint:
        non_retryable.add(RUNNER_EXIT_FINAL)
    message = terminated.get("message") or f"exit code {code}"
    if code in non_retryable:
        message = f"exit code {code} is non-retryable"
    return Outcome(
        AttemptState.FAILED,
        terminated.get("reason") or "Error",
        message,
        retryable=code not in non_retryable,
        exit_code=code,
    )


def pod_deleted() -> Outcome:
    """A pod deleted before its attempt ended (by someone, or with its node)."""
    return Outcome(
        AttemptState.LOST,
        "PodDeleted",
        "the attempt's pod was deleted before it finished",
        retryable=True,
    )


def timed_out() -> Outcome:
    return Outcome(
        AttemptState.TIMED_OUT, "TimedOut", "attempt exceeded its maxDuration", retryable=True
    )


def stalled(timeout: dt.timedelta) -> Outcome:
    return Outcome(
        AttemptState.LOST,
        "Stalled",
        f"no heartbeat for {timeout.total_seconds():g}s",
        retryable=True,
    )


def not_started(pod: dict[str, Any] | None) -> Outcome:
    """An attempt whose pod did not start within `timeouts.pending`."""
    reason, message = pending_reason(pod)
    return Outcome(
        AttemptState.FAILED,
        reason,
        f"not started within timeouts.pending: {message}",
        retryable=True,
    )


def pending_reason(pod: dict[str, Any] | None) -> tuple[str, str]:
    """Why a pod has not started: the scheduler's or the node's own words."""
    if pod is None:
        return "PodMissing", "the attempt's pod does not exist"
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("reason") or "Unschedulable", condition.get("message") or ""
    waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        return waiting["reason"], waiting.get("message") or waiting["reason"]
    return "PodPending", f"pod is {status.get('phase') or 'Pending'}"
