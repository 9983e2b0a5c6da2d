"""Callers identified by Kubernetes: a bearer token reviewed by the API server (TokenReview),
then allowed what RBAC allows them (SubjectAccessReview), as aggregated API servers do."""

from __future__ import annotations

from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

from drover.protocol.names import GROUP
from drover_operator.api.errors import ProblemError

KUBE: web.AppKey[AsyncClient] = web.AppKey("kube", AsyncClient)


async def authorize(
    request: web.Request, namespace: str, verb: str = "get", resource: str = "taskruns"
) -> str:
    """The caller's Kubernetes username, if RBAC lets it `verb` `resource` (of drover.dev)
    in `namespace`."""
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
                    resource=resource,
                    verb=verb,
                    namespace=namespace,
                ),
            )
        )
    )
    if access.status is None or not access.status.allowed:
        raise ProblemError(
            403, "forbidden", f"{user.username} may not {verb} {resource} in namespace {namespace}"
        )
    return user.username or ""
