"""TaskRun and Task status, built from the store's records (pure)."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from drover.protocol.phases import FINISHED_PHASES, Phase
from drover.protocol.timestamps import now, rfc3339, rfc3339_micro
from drover_operator.domain.records import AttemptSummary, RunRecord, TaskCounts, UnpushedRun
from drover_operator.domain.webhooks import hook_path, secret_name


def _ts(value: dt.datetime | None) -> str | None:
    # Microseconds: attempts a few milliseconds apart must not look simultaneous.
    return rfc3339_micro(value) if value else None


#: A metav1.Condition's reason, as the CRD (and Kubernetes) require it.
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def condition_reason(reason: str, fallback: str) -> str:
    """`reason` as a condition may carry it. A runner's failure reason is the exception's
    class name, which may start with `_` or hold letters outside ASCII: a status carrying
    it as is was refused by the API server, on every try, and the TaskRun never showed how
    its run ended. What the pattern cannot hold is dropped; `fallback` if nothing is left
    (the whole reason stays in `status.attempts`, the API and the CLI)."""
    kept = re.sub(r"[^A-Za-z0-9_,:]", "", reason)
    # Cut to the CRD's 1024 characters, which must not end a reason on `,` or `:` either.
    kept = re.sub(r"^[^A-Za-z]+", "", kept)[:1024].rstrip(",:")
    return kept if _REASON.match(kept) else fallback


def condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    fallback: str = "Unknown",
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": condition_reason(reason, fallback),
        "message": message[:32768],
        "observedGeneration": generation,
    }


def delayed(run: RunRecord) -> bool:
    """A first attempt held back by `delay` or `notBefore`."""
    return (
        run.phase == Phase.QUEUED
        and run.attempt == 0
        and run.eligible_at is not None
        and run.eligible_at > now()
    )


def _succeeded_condition(run: UnpushedRun) -> dict[str, Any]:
    phase, generation = run.phase, run.generation
    message = run.message or phase
    if phase == Phase.SUCCEEDED:
        status, reason, message = "True", "Succeeded", run.message or ""
    elif phase in FINISHED_PHASES:
        status, reason = "False", run.reason or phase
    elif phase == Phase.QUEUED and not run.task_exists:
        status, reason = "Unknown", "TaskNotFound"
        message = f'Task "{run.task}" not found in namespace "{run.namespace}"'
    elif phase == Phase.QUEUED and run.task_invalid:
        status, reason = "Unknown", "TaskNotReady"
        message = f'Task "{run.task}" is not ready: {run.task_invalid}'
    elif phase == Phase.QUEUED and delayed(run):
        assert run.eligible_at is not None
        status, reason = "Unknown", "Delayed"
        message = f"not before {rfc3339(run.eligible_at)} (delay or notBefore)"
    elif phase == Phase.WAITING:
        kind = (run.waiting_for or {}).get("kind", "")
        status, reason = "Unknown", f"WaitingFor{kind}" if kind else "Waiting"
    elif phase in (Phase.QUEUED, Phase.RETRYING) and run.wait_reason:
        status, reason, message = "Unknown", run.wait_reason, run.wait_message or phase
    else:
        status = "Unknown"
        reason = (run.reason if phase == Phase.RETRYING else phase) or phase
    # The condition's status changes only when the run finishes: Unknown until then.
    since = run.finished_at if status != "Unknown" else run.recorded_at
    return {
        **condition("Succeeded", status, reason, message, generation, fallback=phase),
        "lastTransitionTime": _ts(since or now()),
    }


def _attempt(attempt: AttemptSummary) -> dict[str, Any]:
    out = {
        "number": attempt.try_number,
        "execution": attempt.number,
        "podName": attempt.pod_name,
        "startTime": _ts(attempt.started_at),
        "finishTime": _ts(attempt.finished_at),
        "exitCode": attempt.exit_code,
        "reason": (attempt.reason or attempt.state)[:256],
        "message": (attempt.message or "")[:4096] or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def taskrun_status(
    run: UnpushedRun,
    attempts: list[AttemptSummary],
    *,
    output_limit: int,
    children: list[str] | None = None,
) -> dict[str, Any]:
    """`status` of a TaskRun; attempts newest first in, oldest first out. Fields that do
    not apply are None, which the merge patch removes."""
    status: dict[str, Any] = {
        "observedGeneration": run.generation,
        "phase": run.phase,
        "runId": run.id,
        "attempt": run.attempt,
        "attempts": [_attempt(a) for a in reversed(attempts)],
        "conditions": [_succeeded_condition(run)],
        "startTime": _ts(run.started_at),
        "completionTime": _ts(run.finished_at),
        "nextAttemptTime": _ts(run.eligible_at)
        if run.phase == Phase.RETRYING or delayed(run)
        else None,
        # The traceback stays in Postgres and the API; status carries the summary.
        "error": {k: v for k, v in run.error.items() if k != "traceback"} if run.error else None,
        "waitingFor": run.waiting_for if run.phase == Phase.WAITING else None,
        "parent": run.parent_name,
        "children": children or None,
    }
    if run.metadata:
        status["metadata"] = run.metadata
    if run.output is not None:
        encoded = json.dumps(run.output)
        if len(encoded) > output_limit:
            status["output"] = encoded[:output_limit]
            status["outputTruncated"] = True
        else:
            status["output"] = run.output
            status["outputTruncated"] = False
    return status


def task_status(counts: TaskCounts) -> dict[str, Any]:
    """Task status without the condition's lastTransitionTime (see `ready_since`)."""
    # A bad schedule makes the Task not Ready, though runs created directly still start.
    invalid = counts.invalid or counts.schedule_problem
    ready = condition(
        "Ready",
        "False" if invalid else "True",
        invalid.split(":", 1)[0] if invalid else "Valid",
        invalid or "the Task is valid and runs are admitted",
        counts.generation,
    )
    webhook = None
    if counts.webhook:
        webhook = {
            "path": hook_path(counts.namespace, counts.name),
            "secretName": secret_name(counts.name),
        }
    return {
        "observedGeneration": counts.generation,
        "active": counts.active,
        "queued": counts.queued,
        "waiting": counts.waiting,
        "conditions": [ready],
        # None removes it (the status is merge-patched).
        "webhook": webhook,
    }


def ready_since(ready: dict[str, Any], observed: dict[str, Any] | None, at: dt.datetime) -> str:
    """`lastTransitionTime` of a Ready condition: kept from the one last seen on the Task
    (`observed`, across restarts) while its status is the same; `at` when it changes."""
    if observed is not None and observed.get("status") == ready["status"]:
        since = observed.get("lastTransitionTime")
        if isinstance(since, str) and since:
            return since
    return rfc3339(at)
