"""The API's calls as data (method, path, body), and its answers as results or errors:
shared by `Client` and `AsyncClient`, which only send them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

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


def complete_token(prefix: str, namespace: str, token_id: str, data: Any) -> Call:
    path = f"{prefix}/namespaces/{namespace}/waitpoints/{token_id}/complete"
    return Call("POST", path, {"data": data})


def get_token(prefix: str, namespace: str, token_id: str) -> Call:
    return Call("GET", f"{prefix}/namespaces/{namespace}/waitpoints/{token_id}")


def list_tokens(
    prefix: str, namespace: str, *, state: str | None, task: str | None, limit: int
) -> Call:
    params: list[tuple[str, str | int | float | bool | None]] = [("limit", limit)]
    if state:
        params.append(("state", state))
    if task:
        params.append(("task", task))
    return Call("GET", f"{prefix}/namespaces/{namespace}/waitpoints", params=params)


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
