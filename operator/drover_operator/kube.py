"""The operator's one Kubernetes client, and the Drover resources as lightkube types."""

from __future__ import annotations

from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource

from drover_operator.crd import GROUP, VERSION

TaskResource = create_namespaced_resource(GROUP, VERSION, "Task", "tasks")
TaskRunResource = create_namespaced_resource(GROUP, VERSION, "TaskRun", "taskruns")

FIELD_MANAGER = "drover-operator"
FINALIZER = "drover.dev/run-record"


def make_client() -> AsyncClient:
    """From KUBECONFIG, ~/.kube/config or the in-cluster ServiceAccount, as kubectl does."""
    return AsyncClient(field_manager=FIELD_MANAGER)
