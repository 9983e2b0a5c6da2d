"""Runs and Tasks as the API shows them (pure): a run from its record, with why it waits;
its attempts, steps and waits; a Task's overview."""

from __future__ import annotations

from drover.protocol.history import AttemptView, StepView, TaskSummary, WaitView
from drover.protocol.phases import Phase
from drover.protocol.runs import RunView, Waiting, labels_as_tags
from drover.protocol.timestamps import rfc3339
from drover_operator.domain.records import (
    AttemptSummary,
    RunRecord,
    StepTiming,
    TaskSummaryRecord,
    WaitSummary,
)
from drover_operator.domain.status import delayed


def waiting(run: RunRecord, position: int | None = None) -> Waiting | None:
    """Why a run that has not started waits; None for a run that does not wait."""
    if delayed(run):
        assert run.eligible_at is not None
        return Waiting(
            reason="Delayed",
            message=f"not before {rfc3339(run.eligible_at)} (delay or notBefore)",
            eligible_at=run.eligible_at,
        )
    if run.phase in (Phase.QUEUED, Phase.RETRYING) and run.wait_reason:
        return Waiting(
            reason=run.wait_reason,
            message=run.wait_message or run.wait_reason,
            position=position,
        )
    return None


def run_view(run: RunRecord, *, position: int | None = None, full: bool = True) -> RunView:
    """`full`: with payload, output and error (one run); without: a list's row."""
    return RunView(
        name=run.name,
        id=run.id,
        namespace=run.namespace,
        task=run.task,
        phase=run.phase,
        attempt=run.attempt,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        reason=run.reason,
        message=run.message,
        waiting=waiting(run, position),
        concurrency_key=run.concurrency_key,
        priority=run.priority,
        tags=labels_as_tags(run.tags),
        payload=run.payload if full else None,
        output=run.output if full else None,
        error=run.error,
        metadata=run.metadata if full else {},
        parent=run.parent_name,
        children=run.child_count,
    )


def attempt_view(attempt: AttemptSummary) -> AttemptView:
    return AttemptView(
        attempt=attempt.try_number,
        execution=attempt.number,
        pod=attempt.pod_name,
        state=attempt.state,
        admitted_at=attempt.admitted_at,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        exit_code=attempt.exit_code,
        reason=attempt.reason,
        message=attempt.message,
    )


def step_view(step: StepTiming) -> StepView:
    return StepView(
        seq=step.seq,
        name=step.name,
        attempt=step.attempt,
        started_at=step.started_at,
        finished_at=step.finished_at,
    )


def wait_view(wait: WaitSummary) -> WaitView:
    return WaitView(
        seq=wait.seq,
        kind=wait.kind,
        state=wait.state,
        created_at=wait.created_at,
        resolved_at=wait.resolved_at,
        until=wait.wake_at if wait.kind == "Duration" else None,
        token=wait.token_id,
        runs=wait.runs,
    )


def task_summary(task: TaskSummaryRecord) -> TaskSummary:
    concurrency = task.spec.get("concurrency") or {}
    return TaskSummary(
        namespace=task.namespace,
        name=task.name,
        ready=task.invalid is None,
        problem=task.invalid,
        limit=concurrency.get("limit"),
        per_key_limit=concurrency.get("perKeyLimit"),
        running=task.running,
        queued=task.queued,
        waiting=task.waiting,
        succeeded=task.succeeded,
        failed=task.failed,
        canceled=task.canceled,
        p50_seconds=task.p50_seconds,
        p95_seconds=task.p95_seconds,
        p99_seconds=task.p99_seconds,
        schedule=(task.spec.get("schedule") or {}).get("cron"),
        next_schedule_time=task.next_at,
    )
