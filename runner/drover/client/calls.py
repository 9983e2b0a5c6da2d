"""The API's calls as data (method, path, body), and its answers as results or errors:
shared by `Client` and `AsyncClient`, which only send them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from drover.protocol.history import LogEntry, LogPage, RunTimeline, TaskSummaryList
from drover.protocol.phases import FINISHED_PHASES
from drover.protocol.runs import MAX_BATCH, RunList, RunView
from drover.protocol.timestamps import rfc3339
from drover.protocol.workflows import TokenList, TokenState
from drover.requests import Duration, error, trigger_body
from drover.requests import duration_text as _duration

__all__ = ["Call", "Duration", "error", "trigger_body"]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: list[tuple[str, str | int | float | bool | None]] = field(default_factory=list)


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


def _scope(prefix: str, namespace: str | None) -> str:
    """Where a listing is: a namespace, or (None) every namespace."""
    return prefix if namespace is None else f"{prefix}/namespaces/{namespace}"


def list_page(
    prefix: str,
    namespace: str | None,
    *,
    task: str | None = None,
    phase: str | list[str] | None = None,
    tag: str | list[str] | None = None,
    since: dt.datetime | Duration = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    after: str | None = None,
    parent: str | None = None,
) -> Call:
    params: list[tuple[str, str | int | float | bool | None]] = [("limit", limit)]
    if task:
        params.append(("task", task))
    if parent:
        params.append(("parent", parent))
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
    return Call("GET", f"{_scope(prefix, namespace)}/taskruns", params=params)


def complete_token(prefix: str, namespace: str, token_id: str, data: Any) -> Call:
    path = f"{prefix}/namespaces/{namespace}/waitpoints/{token_id}/complete"
    return Call("POST", path, {"data": data})


def get_token(prefix: str, namespace: str, token_id: str) -> Call:
    return Call("GET", f"{prefix}/namespaces/{namespace}/waitpoints/{token_id}")


def list_tokens(
    prefix: str, namespace: str | None, *, state: str | None, task: str | None, limit: int
) -> Call:
    params: list[tuple[str, str | int | float | bool | None]] = [("limit", limit)]
    if state:
        params.append(("state", state))
    if task:
        params.append(("task", task))
    return Call("GET", f"{_scope(prefix, namespace)}/waitpoints", params=params)


def timeline(prefix: str, namespace: str, name: str) -> Call:
    return Call("GET", f"{prefix}/namespaces/{namespace}/taskruns/{name}/timeline")


def logs(
    prefix: str,
    namespace: str,
    name: str,
    *,
    after: int = 0,
    attempt: int | None = None,
    since: dt.datetime | Duration = None,
    limit: int = 1000,
) -> Call:
    params: list[tuple[str, str | int | float | bool | None]] = [("after", after), ("limit", limit)]
    if attempt is not None:
        params.append(("attempt", attempt))
    if since is not None:
        when = rfc3339(since) if isinstance(since, dt.datetime) else _duration(since)
        params.append(("since", str(when)))
    return Call("GET", f"{prefix}/namespaces/{namespace}/taskruns/{name}/logs", params=params)


def tasks(prefix: str, namespace: str | None, *, window: Duration = None) -> Call:
    params: list[tuple[str, str | int | float | bool | None]] = []
    if window is not None:
        params.append(("window", str(_duration(window))))
    return Call("GET", f"{_scope(prefix, namespace)}/tasks", params=params)


def timeline_of(body: Any) -> RunTimeline:
    return RunTimeline.model_validate(body)


def log_lines(body: Any) -> list[LogEntry]:
    return LogPage.model_validate(body).lines


def task_list(body: Any) -> TaskSummaryList:
    return TaskSummaryList.model_validate(body)


def token(body: Any) -> TokenState:
    return TokenState.model_validate(body)


def tokens(body: Any) -> list[TokenState]:
    return TokenList.model_validate(body).items


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


RETRYABLE = frozenset({429, 502, 503, 504})
