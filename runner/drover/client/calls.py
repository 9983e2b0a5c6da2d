"""The API's calls as data (method, path, body), and its answers as results or errors:
shared by `Client` and `AsyncClient`, which only send them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
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
from drover.protocol.phases import FINISHED_PHASES
from drover.protocol.runs import MAX_BATCH, RunList, RunView, TriggerRequest
from drover.protocol.timestamps import rfc3339

Duration = dt.timedelta | str | float | None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: list[tuple[str, str | int | float | bool | None]] = field(default_factory=list)


def _duration(value: Duration) -> str | None:
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
        "idempotencyKeyTTL": _duration(idempotency_key_ttl),
        "concurrencyKey": concurrency_key,
        "priority": priority,
        "delay": _duration(delay),
        "ttl": _duration(ttl),
        "tags": tags,
        "metadata": metadata,
    }
    body = {k: v for k, v in values.items() if v is not None}
    TriggerRequest.model_validate(body)
    return body


def trigger(prefix: str, namespace: str, task: str, body: dict[str, Any]) -> Call:
    return Call("POST", f"{prefix}/namespaces/{namespace}/tasks/{task}/trigger", body)


def batch(prefix: str, namespace: str, task: str, items: list[dict[str, Any]]) -> Call:
    if len(items) > MAX_BATCH:
        raise ValueError(f"a batch has at most {MAX_BATCH} items, not {len(items)}")
    return Call("POST", f"{prefix}/namespaces/{namespace}/tasks/{task}/batch", {"items": items})


def get(prefix: str, namespace: str, name: str) -> Call:
    return Call("GET", f"{prefix}/namespaces/{namespace}/taskruns/{name}")


def cancel(prefix: str, namespace: str, name: str) -> Call:
    return Call("POST", f"{prefix}/namespaces/{namespace}/taskruns/{name}/cancel", {})


def replay(prefix: str, namespace: str, name: str, payload: Any = None) -> Call:
    body = {} if payload is None else {"payload": payload}
    return Call("POST", f"{prefix}/namespaces/{namespace}/taskruns/{name}/replay", body)


def list_page(
    prefix: str,
    namespace: str,
    *,
    task: str | None = None,
    phase: str | list[str] | None = None,
    tag: str | list[str] | None = None,
    since: dt.datetime | Duration = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    after: str | None = None,
) -> Call:
    params: list[tuple[str, str | int | float | bool | None]] = [("limit", limit)]
    if task:
        params.append(("task", task))
    for value in [phase] if isinstance(phase, str) else phase or []:
        params.append(("phase", value))
    for value in [tag] if isinstance(tag, str) else tag or []:
        params.append(("tag", value))
    if since is not None:
        when = rfc3339(since) if isinstance(since, dt.datetime) else _duration(since)
        params.append(("since", str(when)))
    if until is not None:
        params.append(("until", rfc3339(until)))
    if after:
        params.append(("continue", after))
    return Call("GET", f"{prefix}/namespaces/{namespace}/taskruns", params=params)


def decode(content: bytes) -> Any:
    """A response's JSON; what is not JSON (a proxy's error page) becomes the message."""
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return {"message": content.decode(errors="replace")[:1000]}


def page(body: Any) -> RunList:
    return RunList.model_validate(body)


def view(body: Any) -> RunView:
    return RunView.model_validate(body)


def finished(run: RunView) -> bool:
    return run.phase in FINISHED_PHASES


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


RETRYABLE = frozenset({429, 502, 503, 504})
