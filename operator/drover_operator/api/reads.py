"""Reading a run's history after its pod is gone: `/v1/namespaces/{ns}/taskruns/{name}/...`.

Callers authenticate with a Kubernetes bearer token (a ServiceAccount's, or a user's) and
are allowed what Kubernetes RBAC allows them: `get` on `taskruns.drover.dev` in that
namespace (a TokenReview, then a SubjectAccessReview, as aggregated API servers do).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

from drover_operator.api.errors import ProblemError
from drover_operator.api.runs import STORE
from drover_operator.crd import GROUP
from drover_operator.store import queries as q

KUBE: web.AppKey[AsyncClient] = web.AppKey("kube", AsyncClient)


async def authorize(request: web.Request, namespace: str) -> str:
    """The caller's Kubernetes username, if RBAC lets it get TaskRuns in `namespace`."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    if not header.startswith("Bearer ") or not token:
        raise ProblemError(401, "unauthenticated", "a Kubernetes bearer token is required")
    client = request.app[KUBE]
    try:
        review = await client.create(TokenReview(spec=TokenReviewSpec(token=token)))
    except ApiError as exc:
        raise ProblemError(503, "unavailable", f"token review failed: {exc}") from None
    status = review.status
    if status is None or not status.authenticated or status.user is None:
        raise ProblemError(401, "unauthenticated", "Kubernetes did not accept the token")
    user = status.user
    access = await client.create(
        SubjectAccessReview(
            spec=SubjectAccessReviewSpec(
                user=user.username,
                groups=user.groups,
                uid=user.uid,
                extra=user.extra,
                resourceAttributes=ResourceAttributes(
                    group=GROUP,
                    resource="taskruns",
                    verb="get",
                    namespace=namespace,
                ),
            )
        )
    )
    if access.status is None or not access.status.allowed:
        raise ProblemError(
            403, "forbidden", f"{user.username} may not get taskruns in namespace {namespace}"
        )
    return user.username or ""


async def _run(request: web.Request) -> dict[str, Any]:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(request, namespace)
    rows = await request.app[STORE].fetch(q.RUN_BY_NAME, (namespace, name))
    if not rows:
        raise ProblemError(404, "not-found", f"no run {namespace}/{name} in Drover's history")
    return rows[0]


async def run_record(request: web.Request) -> web.Response:
    run = await _run(request)
    steps = await request.app[STORE].fetch(q.RUN_STEP_NAMES, (run["id"],))
    return web.json_response(
        {
            "runId": str(run["id"]),
            "namespace": run["namespace"],
            "name": run["name"],
            "task": run["task"],
            "phase": run["phase"],
            "attempt": run["attempt"],
            "output": run["output"],
            "error": run["error"],
            "metadata": run["metadata"],
            "steps": [{"seq": s["seq"], "name": s["name"]} for s in steps],
        }
    )


async def run_logs(request: web.Request) -> web.Response:
    run = await _run(request)
    try:
        after = int(request.query.get("after", "0"))
        limit = min(int(request.query.get("limit", "1000")), 5000)
    except ValueError:
        raise ProblemError(422, "invalid-query", "after and limit must be integers") from None
    rows = await request.app[STORE].fetch(q.RUN_LOGS_PAGE, (run["id"], after, max(limit, 1)))
    return web.json_response(
        {
            "lines": [
                {
                    "id": r["id"],
                    "attempt": r["attempt"],
                    "time": r["at"].isoformat(),
                    "level": r["level"],
                    "logger": r["logger"],
                    "message": r["message"],
                }
                for r in rows
            ]
        }
    )


def add_routes(app: web.Application) -> None:
    prefix = "/v1/namespaces/{namespace}/taskruns/{name}"
    app.router.add_get(prefix, run_record)
    app.router.add_get(f"{prefix}/logs", run_logs)
