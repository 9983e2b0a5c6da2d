"""TaskRun and Task status, built from the store's records (pure)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from drover_operator.outcomes import FINISHED


def _ts(value: dt.datetime | None) -> str | None:
    # Microseconds: attempts a few milliseconds apart must not look simultaneous.
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _condition(
    kind: str, status: str, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
    }


def _succeeded_condition(run: dict[str, Any]) -> dict[str, Any]:
    phase, generation = run["phase"], run["generation"]
    message = run.get("message") or phase
    if phase == "Succeeded":
        status, reason, message = "True", "Succeeded", run.get("message") or ""
    elif phase in FINISHED:
        status, reason = "False", run.get("reason") or phase
    elif phase == "Queued" and not run.get("task_exists", True):
        status, reason = "Unknown", "TaskNotFound"
        message = f'Task "{run["task"]}" not found in namespace "{run["namespace"]}"'
    elif phase == "Queued" and run.get("task_invalid"):
        status, reason = "Unknown", "TaskNotReady"
        message = f'Task "{run["task"]}" is not ready: {run["task_invalid"]}'
    else:
        status = "Unknown"
        reason = (run.get("reason") if phase == "Retrying" else phase) or phase
    # The condition's status changes only when the run finishes: Unknown until then.
    since = run.get("finished_at") if status != "Unknown" else run.get("recorded_at")
    return {
        **_condition("Succeeded", status, reason, message, generation),
        "lastTransitionTime": _ts(since or dt.datetime.now(dt.UTC)),
    }


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "number": row["number"],
        "podName": row["pod_name"],
        "startTime": _ts(row["started_at"]),
        "finishTime": _ts(row["finished_at"]),
        "exitCode": row["exit_code"],
        "reason": (row["reason"] or row["state"])[:256],
        "message": (row["message"] or "")[:4096] or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def taskrun_status(
    run: dict[str, Any], attempts: list[dict[str, Any]], *, output_limit: int
) -> dict[str, Any]:
    """`status` of a TaskRun; attempts newest first in, oldest first out."""
    status: dict[str, Any] = {
        "observedGeneration": run["generation"],
        "phase": run["phase"],
        "runId": str(run["id"]),
        "attempt": run["attempt"],
        "attempts": [_attempt(a) for a in reversed(attempts)],
        "conditions": [_succeeded_condition(run)],
        "startTime": _ts(run["started_at"]),
        "completionTime": _ts(run["finished_at"]),
        "nextAttemptTime": _ts(run["eligible_at"]) if run["phase"] == "Retrying" else None,
        # The traceback stays in Postgres and the API; status carries the summary.
        "error": {k: v for k, v in run["error"].items() if k != "traceback"}
        if run["error"]
        else None,
    }
    if run.get("metadata"):
        status["metadata"] = run["metadata"]
    if run["output"] is not None:
        encoded = json.dumps(run["output"])
        if len(encoded) > output_limit:
            status["output"] = encoded[:output_limit]
            status["outputTruncated"] = True
        else:
            status["output"] = run["output"]
            status["outputTruncated"] = False
    return status


def task_status(counts: dict[str, Any]) -> dict[str, Any]:
    """Task status without the condition's lastTransitionTime (the caller keeps that, since
    it changes only when the condition's status does)."""
    # A bad schedule makes the Task not Ready, though runs created directly still start.
    invalid = counts["invalid"] or counts.get("schedule_problem")
    ready = _condition(
        "Ready",
        "False" if invalid else "True",
        (invalid or "").split(":", 1)[0] if invalid else "Valid",
        invalid or "the Task is valid and runs are admitted",
        counts["generation"],
    )
    return {
        "observedGeneration": counts["generation"],
        "active": counts["active"],
        "queued": counts["queued"],
        "conditions": [ready],
    }
