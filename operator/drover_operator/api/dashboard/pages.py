"""The dashboard's pages and the fragments htmx swaps in: runs, one run, Tasks, tokens.

Each reads what the JSON API reads, through the same store queries, after the same
authorization (`list taskruns` for lists, `get taskruns` for one run, `list waitpoints` for
tokens): a viewer sees nothing they could not see with kubectl.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from drover.protocol.durations import format_duration
from drover.protocol.phases import FINISHED_PHASES, Phase
from drover.protocol.timestamps import now
from drover_operator.api.auth import authorize
from drover_operator.api.dashboard.render import page, render
from drover_operator.api.errors import ProblemError
from drover_operator.api.history import decode_cursor, encode_cursor, run_filter
from drover_operator.api.overviews import timeline_of, window_query
from drover_operator.api.state import STORE
from drover_operator.domain.records import RunRecord
from drover_operator.domain.views import run_view, task_summary
from drover_operator.domain.waits import TokenState
from drover_operator.engine.workflows import token_state
from drover_operator.store.runviews import RunFilter

PAGE_SIZE = 50
#: Log lines a run's page shows (the oldest; the live tail appends the rest).
LOG_LINES = 2000
#: Recent successes per Task on its duration chart.
CHART_POINTS = 200
WINDOWS = ("1h", "6h", "24h", "7d", "31d")


def _namespace(request: web.Request) -> str | None:
    return request.query.get("namespace") or None


async def _runs_page(request: web.Request) -> dict[str, Any]:
    namespace = _namespace(request)
    await authorize(request, namespace, "list")
    token = request.query.get("continue")
    after = decode_cursor(token) if token else None
    where = await run_filter(request, namespace)
    found = await request.app[STORE].runviews.list(where, PAGE_SIZE + 1, after)
    rows = found[:PAGE_SIZE]
    following = encode_cursor(rows[-1]) if len(found) > PAGE_SIZE else None
    params = {k: v for k, v in request.query.items() if k != "continue" and v}
    return {
        "runs": [run_view(r, full=False) for r in rows],
        "next_query": {**params, "continue": following} if following else None,
        "first_page": after is None,
        "filters": params,
        "phases": [p.value for p in Phase],
    }


@page
async def runs(request: web.Request) -> web.StreamResponse:
    return await render(request, "runs.html", **await _runs_page(request))


@page
async def runs_table(request: web.Request) -> web.StreamResponse:
    return await render(request, "runs_table.html", **await _runs_page(request))


def required(request: web.Request, *names: str) -> list[str]:
    """Query parameters the page needs, or 422 naming the missing one."""
    missing = [n for n in names if not request.query.get(n)]
    if missing:
        raise ProblemError(422, "invalid-query", f"{', '.join(missing)}: required")
    return [request.query[n] for n in names]


async def _run(request: web.Request) -> RunRecord:
    namespace, name = required(request, "namespace", "name")
    await authorize(request, namespace, "get", name=name)
    run = await request.app[STORE].runs.by_name(namespace, name)
    if run is None:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    return run


@dataclass(frozen=True)
class Bar:
    """One row of a run's waterfall, placed in percent of the run's span."""

    kind: str
    label: str
    x: float
    width: float
    detail: str
    link: str | None = None


def _waterfall(
    run: RunRecord, rows: list[tuple[str, str, dt.datetime | None, dt.datetime | None, str]]
) -> list[Bar]:
    begin = run.created_at
    ends = [e for _, _, _, e, _ in rows if e] + ([run.finished_at] if run.finished_at else [])
    end = max([*ends, now()] if run.finished_at is None else ends, default=now())
    span = max((end - begin).total_seconds(), 0.001)
    bars = []
    for kind, label, start, stop, link in rows:
        if start is None:
            continue
        x = max(0.0, (start - begin).total_seconds() / span * 100)
        width = max(0.5, ((stop or end) - start).total_seconds() / span * 100)
        took = ((stop or end) - start).total_seconds()
        detail = f"{label}: {took:.2f}s" + ("" if stop else " (so far)")
        bars.append(Bar(kind, label, round(x, 2), round(min(width, 100 - x), 2), detail, link))
    return bars


async def _detail(request: web.Request) -> dict[str, Any]:
    run = await _run(request)
    store = request.app[STORE]
    timeline = await timeline_of(store, run)
    children = await store.runviews.list(RunFilter(namespace=run.namespace, parent_id=run.id), 200)
    rows: list[tuple[str, str, dt.datetime | None, dt.datetime | None, str]] = []
    for a in timeline.attempts:
        label = f"attempt {a.attempt} (pod {a.pod}, {a.state})"
        rows.append(("attempt", label, a.started_at or a.admitted_at, a.finished_at, ""))
    for s in timeline.steps:
        rows.append(("step", f"step {s.seq}: {s.name}", s.started_at, s.finished_at, ""))
    for w in timeline.waits:
        label = f"wait {w.seq}: {w.kind} ({w.state})"
        rows.append(("wait", label, w.created_at, w.resolved_at, ""))
    for c in children:
        start = c.started_at or c.created_at
        rows.append(("child", f"child {c.name} ({c.phase})", start, c.finished_at, c.name))
    lines = await store.runapi.logs(run.id, 0, LOG_LINES)
    return {
        "run": run_view(run),
        "timeline": timeline,
        "children": [run_view(c, full=False) for c in reversed(children)],
        "bars": _waterfall(run, rows),
        "lines": lines,
        "last_line": lines[-1].id if lines else 0,
        "finished": run.phase in FINISHED_PHASES,
    }


@page
async def run_detail(request: web.Request) -> web.StreamResponse:
    return await render(request, "run.html", **await _detail(request))


@page
async def run_summary(request: web.Request) -> web.StreamResponse:
    return await render(request, "run_summary.html", **await _detail(request))


@page
async def tasks(request: web.Request) -> web.StreamResponse:
    namespace = _namespace(request)
    await authorize(request, namespace, "list")
    window = window_query(request.query.get("window"))
    store = request.app[STORE]
    summaries = await store.overviews.tasks(namespace, now() - window)
    charts: dict[str, str] = {}
    for t in summaries:
        done = await store.runviews.list(
            RunFilter(namespace=t.namespace, task=t.name, phases=(Phase.SUCCEEDED.value,)),
            CHART_POINTS,
        )
        points = [
            (r.finished_at.timestamp(), (r.finished_at - r.started_at).total_seconds())
            for r in reversed(done)
            if r.finished_at and r.started_at
        ]
        charts[f"{t.namespace}/{t.name}"] = json.dumps(
            [[p[0] for p in points], [round(p[1], 3) for p in points]]
        )
    return await render(
        request,
        "tasks.html",
        tasks=[task_summary(t) for t in summaries],
        charts=charts,
        window=format_duration(window),
        windows=WINDOWS,
        namespace=namespace or "",
    )


@page
async def tokens(request: web.Request) -> web.StreamResponse:
    namespace = _namespace(request)
    await authorize(request, namespace, "list", "waitpoints")
    found = await request.app[STORE].tokens.list(namespace, state=TokenState.WAITING, limit=200)
    return await render(
        request, "tokens.html", tokens=[token_state(t) for t in found], namespace=namespace or ""
    )


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(
        f"{request.path.rstrip('/')}/runs"
        + (f"?{request.query_string}" if request.query_string else "")
    )


def add_routes(app: web.Application, root: str) -> None:
    app.router.add_get(root, index)
    app.router.add_get(f"{root}/", index)
    app.router.add_get(f"{root}/runs", runs)
    app.router.add_get(f"{root}/runs-table", runs_table)
    app.router.add_get(f"{root}/run", run_detail)
    app.router.add_get(f"{root}/run-summary", run_summary)
    app.router.add_get(f"{root}/tasks", tasks)
    app.router.add_get(f"{root}/tokens", tokens)
