"""What a pod's status means for its attempt, and what a finished attempt means for its run.

Pure functions over pod dicts and Task specs, so every rule is unit-testable.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from drover_operator.crd import TaskSpec, parse_duration
from drover_operator.pods import CONTAINER

FINISHED = ("Succeeded", "Failed", "Canceled", "TimedOut", "Expired")
# `drover.runner` exits 3 when the run must not be retried (AbortRun, non-determinism, a bad
# payload); it normally reports that through the API first, this covers an unreachable API.
RUNNER_EXIT_FINAL = 3


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    state: str  # Succeeded | Failed | TimedOut | Lost
    reason: str
    message: str
    retryable: bool
    exit_code: int | None = None
    # Reported by the SDK runner through the API.
    output: Any = None
    traceback: str | None = None


@dataclass(frozen=True)
class NextStep:
    """What the run does after an attempt: finish with `phase`, or retry at `retry_at`."""

    phase: str
    retry_at: dt.datetime | None = None


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next(
        (s for s in statuses if s.get("name") == CONTAINER), statuses[0] if statuses else {}
    )


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def started_at(pod: dict[str, Any]) -> dt.datetime | None:
    """When the task container started, if it has."""
    state = _container_status(pod).get("state") or {}
    for key in ("running", "terminated"):
        if key in state:
            return _parse_time(state[key].get("startedAt"))
    return None


def pod_outcome(pod: dict[str, Any], task: TaskSpec) -> Outcome | None:
    """The attempt's outcome once its pod is finished; None while it is not."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return Outcome("Succeeded", "Completed", "exit code 0", retryable=False, exit_code=0)
    if phase != "Failed":
        return None
    if status.get("reason") == "DeadlineExceeded":
        limit = task.timeouts.max_duration
        return Outcome(
            "TimedOut", "TimedOut", f"attempt exceeded maxDuration {limit}", retryable=True
        )
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    if code is None:
        reason = status.get("reason") or "PodFailed"
        return Outcome("Lost", reason, status.get("message") or "the pod failed", retryable=True)
    non_retryable = set(task.retry.non_retryable_exit_codes or [])
    if task.entrypoint:
        non_retryable.add(RUNNER_EXIT_FINAL)
    message = terminated.get("message") or f"exit code {code}"
    if code in non_retryable:
        message = f"exit code {code} is non-retryable"
    return Outcome(
        "Failed",
        terminated.get("reason") or "Error",
        message,
        retryable=code not in non_retryable,
        exit_code=code,
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


def next_step(
    task: TaskSpec,
    attempt: int,
    outcome: Outcome,
    now: dt.datetime,
    rng: random.Random | None = None,
) -> NextStep:
    """Retry per the Task's policy, or finish with the phase this outcome leads to."""
    if outcome.state == "Succeeded":
        return NextStep("Succeeded")
    if outcome.retryable and attempt < task.retry.max_attempts:
        jitter = (rng or random).uniform(1.0, 2.0)
        return NextStep("Retrying", now + task.retry.backoff(attempt, jitter))
    return NextStep("TimedOut" if outcome.state == "TimedOut" else "Failed")


def max_duration(task: TaskSpec) -> dt.timedelta | None:
    return parse_duration(task.timeouts.max_duration) if task.timeouts.max_duration else None
