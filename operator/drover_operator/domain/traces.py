"""Trace and span ids derived from a run's UID (pure): every replica and every restart agrees
on them without storing anything (see `drover_operator.telemetry.tracing`)."""

from __future__ import annotations

import hashlib
import uuid


def trace_id(run_id: str) -> int:
    """The run's UID as a number (anything else, which Kubernetes never gives: a hash)."""
    try:
        return uuid.UUID(run_id).int or 1
    except ValueError:
        return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")


def _span_id(key: str) -> int:
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return value or 1  # zero is the invalid span id


def run_span_id(run_id: str) -> int:
    return _span_id(f"{run_id}/run")


def attempt_span_id(run_id: str, attempt: int) -> int:
    return _span_id(f"{run_id}/attempt/{attempt}")


def traceparent(run_id: str, attempt: int) -> str:
    """W3C `traceparent` of an attempt's span: what its pod's runner continues."""
    return f"00-{trace_id(run_id):032x}-{attempt_span_id(run_id, attempt):016x}-01"
