"""The operator's one Kubernetes client, and the Drover resources as lightkube types."""

from __future__ import annotations

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource

from drover.protocol.names import GROUP, VERSION

TaskResource = create_namespaced_resource(GROUP, VERSION, "Task", "tasks")
TaskRunResource = create_namespaced_resource(GROUP, VERSION, "TaskRun", "taskruns")

FIELD_MANAGER = "drover-operator"

#: Requests the converger has in flight at once: pods being created, and statuses and Events
#: being written (these two share theirs). Together below the HTTP client's 20 kept-alive
#: connections, so a burst reuses them instead of opening (and TLS-handshaking) new ones;
#: pods have slots of their own, so a burst's status writes never hold back its pods.
POD_CONCURRENCY = 10
PUBLISH_CONCURRENCY = 8

#: The API server could not be reached, or the connection broke: retried on the next pass.
NETWORK_ERRORS = (httpx2.HTTPError,)


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a refused request: an `ApiError`'s, or that of an answer that was
    not a Kubernetes Status (e.g. `404 page not found` for a resource type not served)."""
    if isinstance(exc, ApiError):
        return exc.status.code
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code
    return None


def make_client() -> AsyncClient:
    """From KUBECONFIG, ~/.kube/config or the in-cluster ServiceAccount, as kubectl does."""
    return AsyncClient(field_manager=FIELD_MANAGER)
