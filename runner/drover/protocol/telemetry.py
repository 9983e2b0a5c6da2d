"""Telemetry conventions the operator and task pods share.

**Logs.** `DROVER_LOG_FORMAT=json` makes the operator and the runner write one JSON object per
line, carrying the run, attempt and trace ids when known. Standard library only.

Ids come from the record's extras (`log.info(..., extra={"run_id": ..., "attempt": ...})`),
else from `log_context(...)` (a context variable; the runner sets it for the whole attempt).
A run's trace id is its UID without dashes (see `drover_operator.tracing`), so a record that
names a run names its trace too; the active span's ids are added when tracing is on.

**Traces.** OpenTelemetry is optional: without `opentelemetry-sdk` installed (the `tracing`
extra) or without an exporter configured, nothing is traced. Configured by the standard
variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns on the
OTLP/HTTP exporter, `OTEL_TRACES_EXPORTER` `none` turns it off and `console` prints spans;
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and the other exporter
variables apply as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from drover.protocol.names import ENV_LOG_FORMAT

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator

FIELDS = ("run_id", "run", "namespace", "task", "attempt", "trace_id", "span_id")

# For the whole process (the runner: one attempt per process, threads included) ...
_process: dict[str, Any] = {}
# ... and for a context (an asyncio task, a block of code).
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "drover_log_context", default=None
)


def set_process_context(**values: Any) -> None:
    """Ids added to every record of this process from now on."""
    _process.update({k: v for k, v in values.items() if v is not None})


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", run_id, attempt, trace_id, span_id, ...,
    "exception"}`: one line per record."""

    def __init__(self, span_ids: Callable[[], tuple[str, str] | None] | None = None) -> None:
        super().__init__()
        self.span_ids = span_ids

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_process)
        entry.update(_context.get() or {})
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if self.span_ids is not None and "span_id" not in entry:
            ids = self.span_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        if "trace_id" not in entry and isinstance(entry.get("run_id"), str):
            entry["trace_id"] = entry["run_id"].replace("-", "")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def json_requested() -> bool:
    return os.environ.get(ENV_LOG_FORMAT, "").strip().lower() == "json"


# -- traces -------------------------------------------------------------------------------------


def tracing_enabled_by_env() -> bool:
    """Whether the environment asks for an exporter."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if exporter in ("otlp", "console"):
        return True
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def exporter_from_env() -> SpanExporter | None:
    """The exporter the environment asks for, or None (then nothing is traced)."""
    if not tracing_enabled_by_env():
        return None
    try:
        if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    except ImportError:
        return None


def make_provider(
    service_name: str,
    exporter: SpanExporter,
    *,
    batch: bool = True,
    id_generator: IdGenerator | None = None,
) -> TracerProvider:
    """A tracer provider of our own (the global one is left to the application)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes), id_generator=id_generator)
    processor: SpanProcessor = (
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    return provider
