"""A run as the API shows it (pure): from its record, with why it waits."""

from __future__ import annotations

from drover.protocol.phases import Phase
from drover.protocol.runs import RunView, Waiting, labels_as_tags
from drover.protocol.timestamps import rfc3339
from drover_operator.domain.records import RunRecord
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
    )
