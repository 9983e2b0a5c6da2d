"""Reading a run's history after its pod is gone: `/v1/namespaces/{ns}/taskruns/{name}/...`.

Callers authenticate with a Kubernetes bearer token (a ServiceAccount's, or a user's) and
are allowed what Kubernetes RBAC allows them: `get` on `taskruns.drover.dev` in that
namespace.
"""

from __future__ import annotations

from aiohttp import web

from drover_operator.api.auth import authorize
from drover_operator.api.errors import ProblemError
from drover_operator.api.state import STORE
from drover_operator.domain.records import RunRecord


async def _run(request: web.Request) -> RunRecord:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace)
    run = await request.app[STORE].runs.by_name(namespace, name)
    if run is None:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    return run


async def run_record(request: web.Request) -> web.Response:
    run = await _run(request)
    steps = await request.app[STORE].runapi.step_names(run.id)
    return web.json_response(
        {
            "runId": run.id,
            "namespace": run.namespace,
            "name": run.name,
            "task": run.task,
            "phase": run.phase,
            "attempt": run.attempt,
            "output": run.output,
            "error": run.error,
            "metadata": run.metadata,
            "steps": [{"seq": s.seq, "name": s.name} for s in steps],
        }
    )


async def run_logs(request: web.Request) -> web.Response:
    run = await _run(request)
    try:
        after = int(request.query.get("after", "0"))
        limit = min(int(request.query.get("limit", "1000")), 5000)
    except ValueError:
        raise ProblemError(422, "invalid-query", "after and limit must be integers") from None
    lines = await request.app[STORE].runapi.logs(run.id, after, max(limit, 1))
    return web.json_response(
        {
            "lines": [
                {
                    "id": line.id,
                    "attempt": line.attempt,
                    "time": line.at.isoformat(),
                    "level": line.level,
                    "logger": line.logger,
                    "message": line.message,
                }
                for line in lines
            ]
        }
    )


def add_routes(app: web.Application) -> None:
    prefix = "/v1/namespaces/{namespace}/taskruns/{name}"
    app.router.add_get(prefix, run_record)
    app.router.add_get(f"{prefix}/logs", run_logs)
