"""Traces: one per run, with ids derived from the run's UID so every replica and every restart
agrees on them without storing anything.

- trace id: the run's UID as a 128-bit number (`uuid.hex`): a run's trace is found by its UID.
- `drover.run`, the root span: span id from SHA-256 of `<uid>/run`; emitted when the run
  reaches its final phase, from the TaskRun's creation.
- `drover.admission`, per attempt: from the moment the run waited for a slot (creation, or
  the retry becoming eligible) to its admission; emitted at admission.
- `drover.attempt`, per attempt: span id from SHA-256 of `<uid>/attempt/<n>`, from admission to
  the attempt's end; emitted when it ends, with its state, reason and exit code (errors have
  status ERROR). Task pods get `TRACEPARENT` pointing at it, so the runner's `drover.step` spans
  are its children.

Spans are emitted after the decision committed, by the replica that made it. Export is
best-effort: a replica killed between commit and export loses those spans, never a decision.
Configured by the standard `OTEL_*` variables (see `drover.protocol.telemetry`); without an exporter
nothing is recorded.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from drover.protocol.telemetry import exporter_from_env, make_provider
from drover_operator.domain.traces import attempt_span_id, run_span_id, trace_id

# The ids the next span gets (trace id, span id); None: random, as usual.
_next_ids: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "drover_next_ids", default=(None, None)
)


class _DerivedIds(RandomIdGenerator):
    def generate_trace_id(self) -> int:
        return _next_ids.get()[0] or super().generate_trace_id()

    def generate_span_id(self) -> int:
        return _next_ids.get()[1] or super().generate_span_id()


_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def configure(exporter: SpanExporter | None = None, *, batch: bool = True) -> bool:
    """Trace with `exporter`, or with the one the environment configures; True if on."""
    global _provider, _tracer
    shutdown()
    exporter = exporter or exporter_from_env()
    if exporter is None:
        return False
    _provider = make_provider("drover-operator", exporter, batch=batch, id_generator=_DerivedIds())
    _tracer = _provider.get_tracer("drover.operator")
    return True


def shutdown() -> None:
    """Export what is pending, then stop tracing."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


# -- spans --------------------------------------------------------------------------------------


def _ns(at: dt.datetime | None) -> int | None:
    return int(at.timestamp() * 1e9) if at is not None else None


def _child_of_run(run_id: str) -> Any:
    parent = SpanContext(
        trace_id(run_id), run_span_id(run_id), is_remote=True, trace_flags=TraceFlags(1)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _emit(
    name: str,
    run_id: str,
    span_id: int,
    *,
    root: bool,
    start: dt.datetime | None,
    attributes: dict[str, Any],
    error: str | None = None,
) -> None:
    if _tracer is None:
        return
    token = _next_ids.set((trace_id(run_id), span_id))
    try:
        span = _tracer.start_span(
            name,
            context=trace.set_span_in_context(trace.INVALID_SPAN)
            if root
            else _child_of_run(run_id),
            kind=SpanKind.INTERNAL,
            attributes={k: v for k, v in attributes.items() if v is not None},
            start_time=_ns(start),
        )
    finally:
        _next_ids.reset(token)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def run_span(
    run_id: str,
    *,
    namespace: str,
    name: str,
    task: str,
    phase: str,
    attempts: int,
    created_at: dt.datetime | None,
    message: str | None = None,
) -> None:
    _emit(
        "drover.run",
        run_id,
        run_span_id(run_id),
        root=True,
        start=created_at,
        attributes={
            "drover.namespace": namespace,
            "drover.task": task,
            "drover.run.id": run_id,
            "drover.run.name": name,
            "drover.run.phase": phase,
            "drover.run.attempts": attempts,
        },
        error=None if phase == "Succeeded" else f"{phase}: {message or ''}",
    )


def admission_span(
    run_id: str, attempt: int, *, namespace: str, task: str, waiting_since: dt.datetime | None
) -> None:
    _emit(
        "drover.admission",
        run_id,
        0,
        root=False,
        start=waiting_since,
        attributes={
            "drover.namespace": namespace,
            "drover.task": task,
            "drover.run.id": run_id,
            "drover.attempt": attempt,
        },
    )


def attempt_span(
    run_id: str,
    attempt: int,
    *,
    namespace: str,
    task: str,
    admitted_at: dt.datetime | None,
    state: str,
    reason: str | None,
    message: str | None,
    exit_code: int | None = None,
) -> None:
    _emit(
        "drover.attempt",
        run_id,
        attempt_span_id(run_id, attempt),
        root=False,
        start=admitted_at,
        attributes={
            "drover.namespace": namespace,
            "drover.task": task,
            "drover.run.id": run_id,
            "drover.attempt": attempt,
            "drover.attempt.state": state,
            "drover.attempt.reason": reason,
            "drover.attempt.exit_code": exit_code,
        },
        error=None if state == "Succeeded" else f"{reason}: {message or ''}",
    )
