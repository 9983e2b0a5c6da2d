"""The run history over HTTP: runs listed newest first (keyset pages), in a namespace or in
all of them, one run, its logs. From Postgres, so runs whose TaskRun and pods are gone are
still there.

Callers are allowed what Kubernetes RBAC allows them on `taskruns.drover.dev` in the
namespace: `list` for the list (across namespaces: `list` at the cluster scope, as `kubectl
get -A` needs), `get` for one run and its logs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from aiohttp import web

from drover.protocol.durations import parse_duration
from drover.protocol.history import LogEntry, LogPage
from drover.protocol.phases import Phase
from drover.protocol.runs import RunList, tag_filter
from drover.protocol.timestamps import now, parse_rfc3339
from drover_operator.api.auth import authorize
from drover_operator.api.errors import ProblemError
from drover_operator.api.state import PREFIXES, STORE, TRIGGERS
from drover_operator.domain.records import RunRecord
from drover_operator.domain.views import run_view, waiting
from drover_operator.store.runviews import Cursor, RunFilter

_MAX_PAGE = 500


def encode_cursor(run: RunRecord) -> str:
    raw = json.dumps([run.created_at.isoformat(), run.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    try:
        created, run_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return Cursor(dt.datetime.fromisoformat(created), str(run_id))
    except (ValueError, TypeError, binascii.Error):
        raise ProblemError(422, "invalid-query", "continue: not a token this API gave") from None


def time_query(name: str, value: str | None) -> dt.datetime | None:
    """An RFC 3339 time, or a duration back from now (`1h`: an hour ago)."""
    if not value:
        return None
    try:
        if value[0].isdigit() and "T" not in value and "-" not in value:
            return now() - parse_duration(value)
        return parse_rfc3339(value)
    except ValueError:
        raise ProblemError(
            422, "invalid-query", f"{name}: {value!r} is neither RFC 3339 nor a duration like 1h"
        ) from None


async def _parent(request: web.Request, namespace: str | None) -> str | None:
    """`?parent=NAME`: the id of that run (children are in their parent's namespace)."""
    name = request.query.get("parent")
    if not name:
        return None
    if namespace is None:
        raise ProblemError(422, "invalid-query", "parent: only within a namespace")
    parent = await request.app[STORE].runs.by_name(namespace, name)
    if parent is None:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    return parent.id


async def run_filter(request: web.Request, namespace: str | None) -> RunFilter:
    query = request.query
    phases = tuple(p for value in query.getall("phase", []) for p in value.split(",") if p)
    unknown = [p for p in phases if p not in set(Phase)]
    if unknown:
        raise ProblemError(422, "invalid-query", f"phase: unknown {', '.join(unknown)}")
    tags: dict[str, str | None] = {}
    for value in query.getall("tag", []):
        if not value:
            continue
        try:
            key, tag_value = tag_filter(value)
        except ValueError as exc:
            raise ProblemError(422, "invalid-query", f"tag: {exc}") from None
        tags[key] = tag_value
    return RunFilter(
        namespace=namespace,
        task=query.get("task") or None,
        phases=phases,
        tags=tags,
        since=time_query("since", query.get("since")),
        until=time_query("until", query.get("until")),
        parent_id=await _parent(request, namespace),
        search=query.get("search") or None,
    )


async def list_runs(request: web.Request) -> web.Response:
    """In the path's namespace, or (without one) in every namespace."""
    namespace = request.match_info.get("namespace")
    await authorize(request, namespace, "list")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise ProblemError(422, "invalid-query", "limit must be an integer") from None
    if not 1 <= limit <= _MAX_PAGE:
        raise ProblemError(422, "invalid-query", f"limit must be between 1 and {_MAX_PAGE}")
    token = request.query.get("continue")
    after = decode_cursor(token) if token else None
    # One more than asked: whether there is a next page.
    where = await run_filter(request, namespace)
    runs = await request.app[STORE].runviews.list(where, limit + 1, after)
    page = runs[:limit]
    body = RunList(
        items=[run_view(r, full=False) for r in page],
        continue_=encode_cursor(page[-1]) if len(runs) > limit else None,
    )
    return web.json_response(text=body.model_dump_json(by_alias=True, exclude_none=True))


async def view_of(request: web.Request, run: RunRecord) -> dict[str, Any]:
    """One run as the API shows it, with its place in its queue when it waits for a slot."""
    store = request.app[STORE]
    position = None
    wait = waiting(run)
    if wait is not None and wait.reason in ("ConcurrencyLimit", "PerKeyLimit"):
        position = await store.runviews.queue_position(run)
    view = run_view(run, position=position)
    steps = await store.runapi.step_names(run.id)
    body: dict[str, Any] = view.model_dump(mode="json", by_alias=True, exclude_none=True)
    # Kept from the first version of this endpoint.
    body["runId"] = run.id
    body["steps"] = [{"seq": s.seq, "name": s.name} for s in steps]
    return body


async def _run(request: web.Request) -> RunRecord:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace, "get", name=name)
    run = await request.app[STORE].runs.by_name(namespace, name)
    if run is None:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    return run


async def get_run(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace, "get", name=name)
    run = await request.app[STORE].runs.by_name(namespace, name)
    if run is not None:
        return web.json_response(await view_of(request, run))
    # Triggered a moment ago, not recorded by the operator yet: from its TaskRun.
    pending = await request.app[TRIGGERS].unrecorded(namespace, name)
    if pending is None:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    return web.json_response(text=pending.model_dump_json(by_alias=True, exclude_none=True))


async def run_logs(request: web.Request) -> web.Response:
    """`?after=ID&limit=N&attempt=N&since=1h`: lines after line `after`, oldest first, of
    one attempt (try), logged from `since` (RFC 3339, or a duration back from now)."""
    run = await _run(request)
    query = request.query
    try:
        after = int(query.get("after", "0"))
        limit = min(int(query.get("limit", "1000")), 5000)
        attempt = int(query["attempt"]) if query.get("attempt") else None
    except ValueError:
        raise ProblemError(
            422, "invalid-query", "after, limit and attempt must be integers"
        ) from None
    lines = await request.app[STORE].runapi.logs(
        run.id, after, max(limit, 1), attempt=attempt, since=time_query("since", query.get("since"))
    )
    page = LogPage(
        lines=[
            LogEntry(
                id=line.id,
                attempt=line.attempt,
                execution=line.execution,
                time=line.at,
                level=line.level,
                logger=line.logger,
                message=line.message,
            )
            for line in lines
        ]
    )
    return web.json_response(text=page.model_dump_json(by_alias=True))


def add_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        app.router.add_get(f"{prefix}/taskruns", list_runs)
        runs = f"{prefix}/namespaces/{{namespace}}/taskruns"
        app.router.add_get(runs, list_runs)
        app.router.add_get(f"{runs}/{{name}}", get_run)
        app.router.add_get(f"{runs}/{{name}}/logs", run_logs)
