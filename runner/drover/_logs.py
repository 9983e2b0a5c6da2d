"""Structured logs: `DROVER_LOG_FORMAT=json` makes the operator and the runner write one JSON
object per line, carrying the run, attempt and trace ids when known. Standard library only.

Ids come from the record's extras (`log.info(..., extra={"run_id": ..., "attempt": ...})`),
else from `log_context(...)` (a context variable; the runner sets it for the whole attempt).
A run's trace id is its UID without dashes (see `drover_operator.tracing`), so a record that
names a run names its trace too; the active span's ids are added when tracing is on.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

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
    return os.environ.get("DROVER_LOG_FORMAT", "").strip().lower() == "json"
