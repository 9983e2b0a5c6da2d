"""The runner's traces: a `drover.step` span per step, when tracing is configured (see
`drover.protocol.telemetry`); otherwise everything here does nothing.

In a task pod the operator sets `TRACEPARENT` (W3C) to the attempt's span: each step the runner
executes is a `drover.step` span under it, so a run's trace shows admission, attempts and
steps together.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drover.protocol.names import ENV_TRACEPARENT
from drover.protocol.telemetry import exporter_from_env, make_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_parent: Any = None  # the attempt's context, from TRACEPARENT
_attributes: dict[str, Any] = {}


def setup_runner(attributes: dict[str, Any], exporter: SpanExporter | None = None) -> bool:
    """Trace this attempt's steps when an exporter is configured (or given); True if on."""
    global _tracer, _provider, _parent, _attributes
    try:
        exporter = exporter or exporter_from_env()
        if exporter is None:
            return False
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return False
    _provider = make_provider("drover-runner", exporter)
    _tracer = _provider.get_tracer("drover.runner")
    parent = os.environ.get(ENV_TRACEPARENT)
    _parent = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    _attributes = {k: v for k, v in attributes.items() if v is not None}
    return True


def active() -> bool:
    return _tracer is not None


def flush() -> None:
    if _provider is not None:
        _provider.force_flush(5000)


def shutdown() -> None:
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


@contextlib.contextmanager
def step_span(name: str, seq: int, *, replayed: bool = False) -> Iterator[Span | None]:
    """A `drover.step` span around one step (replayed ones too, marked as such); the
    exception that fails a step is recorded on it. Nothing when tracing is off."""
    if _tracer is None:
        yield None
        return
    attributes = {
        **_attributes,
        "drover.step.name": name,
        "drover.step.seq": seq,
        "drover.step.replayed": replayed,
    }
    with _tracer.start_as_current_span(
        "drover.step", context=_parent, attributes=attributes
    ) as span:
        yield span


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the active span, for log records."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
