"""Metrics and spans for what a transaction committed, emitted from what it returned: after
the commit, by the replica that made the decision (best-effort, never in its way)."""

from __future__ import annotations

from drover.protocol.phases import Phase
from drover.protocol.timestamps import now
from drover_operator.domain.attempts import AttemptState
from drover_operator.domain.records import RunRecord, TaskCounts
from drover_operator.domain.waits import Resumed
from drover_operator.store.admission import Admitted
from drover_operator.store.attempts import AttemptEnded
from drover_operator.store.runs import Closed, NewRun
from drover_operator.telemetry import metrics, tracing


def recorded(run: NewRun) -> None:
    metrics.RUNS_CREATED.labels(run.namespace, run.task).inc()
    if run.failed is not None:  # refused at once
        metrics.run_finished(run.namespace, run.task, Phase.FAILED)
        tracing.run_span(
            run.id,
            namespace=run.namespace,
            name=run.name,
            task=run.task,
            phase=Phase.FAILED,
            attempts=0,
            created_at=run.created_at,
            message=run.failed[1],
        )


def admitted(namespace: str, task: str, attempts: list[Admitted]) -> None:
    for entry in attempts:
        metrics.ATTEMPTS_ADMITTED.labels(namespace, task).inc()
        tracing.admission_span(
            entry.run_id,
            entry.number,
            namespace=namespace,
            task=task,
            waiting_since=entry.waiting_since,
        )


def pod_created(namespace: str, task: str, number: int, latency: float | None) -> None:
    if latency is not None and number == 1:
        metrics.ADMISSION_LATENCY.labels(namespace, task).observe(max(0.0, latency))


def attempt_ended(ended: AttemptEnded) -> None:
    run, attempt, outcome, end = ended.run, ended.attempt, ended.outcome, ended.end
    namespace, task = run.namespace, run.task
    metrics.ATTEMPTS_FINISHED.labels(namespace, task, outcome.state).inc()
    if outcome.reason == "Stalled":
        metrics.STALLS.labels(namespace, task).inc()
    tracing.attempt_span(
        run.id,
        attempt.number,
        namespace=namespace,
        task=task,
        admitted_at=attempt.admitted_at,
        state=outcome.state,
        reason=outcome.reason,
        message=outcome.message,
        exit_code=outcome.exit_code,
    )
    if end.retrying:
        metrics.RETRIES.labels(namespace, task).inc()
    else:
        metrics.run_finished(namespace, task, end.phase, run.started_at or attempt.started_at)
        _run_span(run, end.phase, attempt.number, outcome.message)


def closed(closed: Closed, reason: str, message: str) -> None:
    run, attempt = closed.run, closed.attempt
    metrics.run_finished(run.namespace, run.task, Phase.CANCELED, run.started_at)
    if attempt is not None:
        metrics.ATTEMPTS_FINISHED.labels(run.namespace, run.task, AttemptState.CANCELED).inc()
        tracing.attempt_span(
            run.id,
            attempt.number,
            namespace=run.namespace,
            task=run.task,
            admitted_at=attempt.admitted_at,
            state=AttemptState.CANCELED,
            reason=reason,
            message=message,
        )
    _run_span(run, Phase.CANCELED, run.attempt, message)


def expired(runs: list[RunRecord]) -> None:
    for run in runs:
        metrics.run_finished(run.namespace, run.task, Phase.EXPIRED)
        _run_span(run, Phase.EXPIRED, 0, run.message)


def _run_span(run: RunRecord, phase: Phase, attempts: int, message: str | None) -> None:
    tracing.run_span(
        run.id,
        namespace=run.namespace,
        name=run.name,
        task=run.task,
        phase=phase,
        attempts=attempts,
        created_at=run.created_at,
        message=message,
    )


def suspended(namespace: str, task: str, kind: str) -> None:
    metrics.SUSPENDS.labels(namespace, task, kind).inc()


def resumed(entries: list[Resumed]) -> None:
    for entry in entries:
        metrics.RESUMES.labels(entry.namespace, entry.task, entry.kind).inc()
        if entry.due_at is not None:
            latency = (now() - entry.due_at).total_seconds()
            metrics.RESUME_LATENCY.labels(entry.namespace, entry.task).observe(max(0.0, latency))


def task_counts(counts: list[TaskCounts]) -> None:
    metrics.set_task_counts(counts)


def scheduled(namespace: str, task: str, missed: int, result: str | None) -> None:
    if missed:
        metrics.SCHEDULE_MISSED.labels(namespace, task).inc(missed)
    if result is not None:
        metrics.SCHEDULE_TICKS.labels(namespace, task, result).inc()
