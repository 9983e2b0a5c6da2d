"""What the SDK sends to and hears from Drover's APIs, shared by the task-side workflow calls
and `drover.Client` (standard library and pydantic only: task images stay light): trigger
bodies, checked before anything is sent, and the API's refusals as exceptions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from drover.errors import (
    ClientError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from drover.protocol.durations import format_duration
from drover.protocol.runs import TriggerRequest

#: A duration as callers give it: a `timedelta`, seconds, or a string such as `"90s"`.
Duration = dt.timedelta | str | float | None


def duration_text(value: Duration) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.timedelta):
        return format_duration(value)
    return format_duration(dt.timedelta(seconds=value))


def trigger_body(
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    idempotency_key_ttl: Duration = None,
    concurrency_key: str | None = None,
    priority: int | None = None,
    delay: Duration = None,
    ttl: Duration = None,
    tags: list[str] | dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A trigger's body, checked here first (a `ValueError`-like pydantic error names the
    field before anything is sent)."""
    if isinstance(tags, dict):
        tags = [k if not v else f"{k}={v}" for k, v in tags.items()]
    values: dict[str, Any] = {
        "payload": payload,
        "idempotencyKey": idempotency_key,
        "idempotencyKeyTTL": duration_text(idempotency_key_ttl),
        "concurrencyKey": concurrency_key,
        "priority": priority,
        "delay": duration_text(delay),
        "ttl": duration_text(ttl),
        "tags": tags,
        "metadata": metadata,
    }
    body = {k: v for k, v in values.items() if v is not None}
    TriggerRequest.model_validate(body)
    return body


_ERRORS: dict[int, type[ClientError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    422: InvalidRequestError,
    429: UnavailableError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def error(status: int, body: Any, reason: str = "") -> ClientError:
    """The API's refusal as an exception carrying its problem message."""
    problem = body if isinstance(body, dict) else {}
    kind = _ERRORS.get(status, ClientError)
    return kind(status, str(problem.get("type", "error")), str(problem.get("message", reason)))
