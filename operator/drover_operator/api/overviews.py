"""Overviews over HTTP, for the command line and the dashboard: a run's timeline (its
executions, steps and waits), and each Task's load and recent outcomes.

RBAC as for the run history, on `taskruns.drover.dev`: `get` for a run's timeline, `list`
for the Task overview (in the namespace, or at the cluster scope for every namespace).
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from drover.protocol.durations import format_duration, parse_duration
from drover.protocol.history import RunTimeline, TaskSummaryList
from drover.protocol.timestamps import now
from drover_operator.api.auth import authorize
from drover_operator.api.errors import ProblemError
from drover_operator.api.state import PREFIXES, STORE
from drover_operator.domain.records import RunRecord
from drover_operator.domain.views import attempt_view, step_view, task_summary, wait_view
from drover_operator.store import Store

#: How far back the Task overview counts outcomes, by default and at most.
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=31)
#: A run's executions shown on its timeline (the newest).
_MAX_EXECUTIONS = 1000


def window_query(value: str | None) -> timedelta:
    if not value:
        return DEFAULT_WINDOW
    try:
        window = parse_duration(value)
    except ValueError as exc:
        raise ProblemError(422, "invalid-query", f"window: {exc}") from None
    if not timedelta(0) < window <= MAX_WINDOW:
        raise ProblemError(
            422,
            "invalid-query",
            f"window: must be above 0 and at most {format_duration(MAX_WINDOW)}",
        )
    return window


async def tasks(request: web.Request) -> web.Response:
    """`?window=24h`: every Task of the namespace (or, without one, of all namespaces)."""
    namespace = request.match_info.get("namespace")
    await authorize(request, namespace, "list")
    window = window_query(request.query.get("window"))
    since = now() - window
    found = await request.app[STORE].overviews.tasks(namespace, since)
    body = TaskSummaryList(
        items=[task_summary(t) for t in found], window=format_duration(window), since=since
    )
    return web.json_response(text=body.model_dump_json(by_alias=True))


async def timeline_of(store: Store, run: RunRecord) -> RunTimeline:
    """A run's executions (oldest first), steps and waits."""
    attempts = await store.runs.attempts(run.id, _MAX_EXECUTIONS)
    return RunTimeline(
        name=run.name,
        namespace=run.namespace,
        attempts=[attempt_view(a) for a in reversed(attempts)],
        steps=[step_view(s) for s in await store.overviews.steps(run.id)],
        waits=[wait_view(w) for w in await store.overviews.waits(run.id)],
    )


async def timeline(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace, "get", name=name)
    store = request.app[STORE]
    run = await store.runs.by_name(namespace, name)
    if run is None:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    body = await timeline_of(store, run)
    return web.json_response(text=body.model_dump_json(by_alias=True))


def add_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        app.router.add_get(f"{prefix}/tasks", tasks)
        app.router.add_get(f"{prefix}/namespaces/{{namespace}}/tasks", tasks)
        app.router.add_get(
            f"{prefix}/namespaces/{{namespace}}/taskruns/{{name}}/timeline", timeline
        )
