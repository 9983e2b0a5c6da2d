"""The Helm chart on the local cluster: install → the operator pod runs `drover-operator run`
inside the operator image (as UID 10001, read-only root filesystem), under the chart's
ServiceAccount (RBAC as rendered) → a command TaskRun succeeds, and an SDK TaskRun of the
example task image succeeds with its steps checkpointed → upgrade → uninstall leaves no
operator pods."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.resources.rbac_authorization_v1 import RoleBinding
from lightkube.types import PatchType

from drover.protocol.names import GROUP
from drover_localcluster.binaries import ensure_helm
from drover_localcluster.images.build import Published
from drover_localcluster.images.layout import Layout
from drover_localcluster.processes import free_port
from drover_operator.kube import TaskRunResource
from tests.conftest import REPO_ROOT, E2ECluster, wait_for
from tests.e2e.identities import allowed as authorizer_allows
from tests.e2e.identities import client_as, rule, service_account
from tests.e2e.operator_support import run, task, wait_phase

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "helm" / "drover"
RELEASE = "drover"

EXAMPLES = "ghcr.io/drover-dev/drover-examples:0.1.0"
SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"


class Helm:
    def __init__(self, cluster: E2ECluster, namespace: str, values: Path) -> None:
        self.cluster, self.namespace, self.values = cluster, namespace, values

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(ensure_helm()), *args, "-n", self.namespace],
            capture_output=True,
            text=True,
            env=self.cluster.env,
            timeout=180,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", SELECTOR, "-o", "json"
        )
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return items


@pytest.fixture
def helm(
    cluster: E2ECluster, namespace: str, database: str, tmp_path: Path, images: Published
) -> Iterator[Helm]:
    # `images`: the chart's image is in the node's store, so the operator runs inside it.
    # What `make cluster-up` writes to .cluster/helm-values.yaml, with this test's database,
    # a port of its own and only its namespace watched (other tests run their own operators).
    values = cluster.local.helm_values(api_port=free_port())
    values["database"]["url"] = database
    values["operator"] = {"namespaces": [namespace], "logLevel": "INFO"}
    path = tmp_path / "values.yaml"
    path.write_text(json.dumps(values))
    h = Helm(cluster, namespace, path)
    yield h
    # The chart's operators log to their containers: keep those logs with the cluster's,
    # which a failed run copies somewhere that outlives it.
    for pod in h.pods():
        name = pod["metadata"]["name"]
        with contextlib.suppress(ApiError, httpx2.HTTPError):
            text = "".join(cluster.client.log(name, namespace=namespace, newlines=True))
            (cluster.local.directory / "logs" / f"helm-{namespace}-{name}.log").write_text(text)
    h("uninstall", RELEASE, "--ignore-not-found", check=False)


def api_port(h: Helm) -> int:
    port: int = json.loads(h.values.read_text())["api"]["port"]
    return port


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_operator(h: Helm, *, not_named: str = "") -> str:
    """The operator pod's name once it is Ready (as the node agent reports it: running) and
    actually serving /readyz (the node agent runs no probes)."""

    def running() -> str | None:
        for pod in h.pods():
            name: str = pod["metadata"]["name"]
            conditions = pod.get("status", {}).get("conditions") or []
            is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            if name != not_named and is_ready and not pod["metadata"].get("deletionTimestamp"):
                return name
        return None

    name = wait_for(running, timeout=120, interval=0.5, what="the operator pod Ready")
    wait_for(lambda: ready(api_port(h)), timeout=120, interval=0.5, what="/readyz")
    return name


def assert_runs_inside_its_image(pod: dict[str, Any], images: Published) -> None:
    """Seen from the host's /proc: the operator's process has the image's root filesystem
    (read-only) and nothing of the checkout, and runs as UID 10001."""
    status = pod["status"]["containerStatuses"][0]
    image = Layout(images.store).find(status["image"])
    assert image is not None, f"{status['image']} is not in the node's image store"
    assert status["imageID"] == image.image_id
    pid = int(status["containerID"].split("://")[1])
    proc = Path(f"/proc/{pid}")
    fields = dict(line.split(":\t", 1) for line in (proc / "status").read_text().splitlines())
    assert fields["Uid"].split() == ["10001"] * 4
    root = next(
        line.split() for line in (proc / "mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    )  # fmt: skip
    assert "ro" in root[5].split(",")
    assert (proc / "root" / "opt/venv/bin/drover-operator").is_file()
    assert not os.path.exists(f"{proc}/root{REPO_ROOT}")
    assert "/tmp " in (proc / "mountinfo").read_text()  # the chart's emptyDir


def read_run(h: Helm, namespace: str, name: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port(h)}/v1/namespaces/{namespace}/taskruns/{name}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        record: dict[str, Any] = json.load(response)
        return record


def run_to_success(cluster: E2ECluster, namespace: str, name: str) -> None:
    run(cluster.client, namespace, name, "hello")
    wait_phase(cluster.client, namespace, name, "Succeeded", timeout=120)


# Resources Drover's API authorizes with a SubjectAccessReview but discovery does not list
# (the aggregated API lists none, docs/decisions.md), so `kubectl auth can-i` drops their group.
VIRTUAL_RESOURCES = {"waitpoints.drover.dev", "waitpoints.api.drover.dev"}


def can_i(cluster: E2ECluster, namespace: str, who: str, verb: str, resource: str) -> bool:
    """`kubectl auth can-i --as`; `resource` is `plural.group` and may name a subresource
    (`taskruns.drover.dev/status`). A virtual resource is asked of the authorizer directly,
    with the SubjectAccessReview the API itself makes."""
    resource, _, sub = resource.partition("/")
    if resource not in VIRTUAL_RESOURCES:
        extra = [f"--subresource={sub}"] if sub else []
        proc = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace,
                               "--as", who, check=False)  # fmt: skip
        return proc.stdout.strip() == "yes"
    plural, _, group = resource.partition(".")
    asked = f"{plural}/{sub}" if sub else plural
    return authorizer_allows(cluster, namespace, who, ["system:authenticated"], group, asked, verb)


def bind(cluster: E2ECluster, namespace: str, cluster_role: str, *, user: str = "",
         account: str = "") -> None:  # fmt: skip
    """A RoleBinding of `cluster_role` in `namespace`, for a user or a ServiceAccount."""
    subject = (
        Subject(kind="User", name=user, apiGroup="rbac.authorization.k8s.io")
        if user
        else Subject(kind="ServiceAccount", name=account, namespace=namespace)
    )
    cluster.client.create(
        RoleBinding(
            metadata=ObjectMeta(name=f"{cluster_role}-{user or account}", namespace=namespace),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_role
            ),
            subjects=[subject],
        )
    )


#: verb, resource → allowed, for each of the chart's user roles (bound in one namespace).
ROLE_MATRIX: dict[str, dict[tuple[str, str], bool]] = {
    "drover-task-author": {
        ("create", "tasks.drover.dev"): True,
        ("delete", "tasks.drover.dev"): True,
        ("create", "taskruns.drover.dev"): False,
        ("patch", "tasks.drover.dev/status"): False,
        ("create", "pods"): False,
        ("get", "secrets"): False,
    },
    "drover-run-trigger": {
        ("create", "taskruns.drover.dev"): True,
        ("patch", "taskruns.drover.dev"): True,  # spec.cancel
        ("delete", "taskruns.drover.dev"): True,
        ("get", "tasks.drover.dev"): True,
        ("create", "tasks.drover.dev"): False,
        ("patch", "taskruns.drover.dev/status"): False,
        ("create", "pods"): False,
        ("get", "secrets"): False,
    },
    "drover-viewer": {
        ("list", "taskruns.drover.dev"): True,
        ("watch", "tasks.drover.dev"): True,
        ("create", "taskruns.drover.dev"): False,
        ("patch", "taskruns.drover.dev"): False,
        ("get", "secrets"): False,
    },
    "drover-waitpoint-completer": {
        ("update", "waitpoints.drover.dev"): True,
        ("create", "waitpoints.api.drover.dev/complete"): True,
        ("create", "taskruns.drover.dev"): False,
        ("get", "secrets"): False,
    },
    # Kubernetes' own roles, with the chart's aggregated into them.
    "view": {("list", "taskruns.drover.dev"): True, ("create", "taskruns.drover.dev"): False},
    "edit": {("create", "tasks.drover.dev"): True, ("create", "taskruns.drover.dev"): True},
}


def check_user_roles(cluster: E2ECluster, namespace: str, tmp_path: Path) -> None:
    """The chart's ClusterRoles as `kubectl auth can-i` sees them, then real requests made
    by ServiceAccounts holding them."""
    for role in ROLE_MATRIX:
        bind(cluster, namespace, role, user=f"user-{role}")
    for role, expected in ROLE_MATRIX.items():
        for (verb, resource), allowed in expected.items():
            # Aggregation into view/edit is done by a controller: wait for it.
            def as_expected(
                who: str = f"user-{role}",
                verb: str = verb,
                resource: str = resource,
                allowed: bool = allowed,
            ) -> bool:
                return can_i(cluster, namespace, who, verb, resource) == allowed  # fmt: skip

            wait_for(as_expected, what=f"{role}: can-i {verb} {resource} == {allowed}")

    clients = {}
    for role in ("drover-task-author", "drover-run-trigger", "drover-viewer"):
        bearer = service_account(cluster, namespace, role)
        bind(cluster, namespace, role, account=role)
        clients[role] = client_as(cluster, bearer, tmp_path / f"{role}.kubeconfig")
    author, trigger, viewer = clients.values()

    def refused(call: Callable[[], object], code: int = 403) -> str:
        with pytest.raises(ApiError) as raised:
            call()
        assert raised.value.status.code == code, raised.value.status
        return str(raised.value.status.message)

    # A run that never ends by itself: the cancel below must find it still running (a quick
    # run could succeed first, and a finished run is not canceled).
    command = {"image": "busybox", "command": ["sleep", "600"]}
    task(author, namespace, "authored", command)
    refused(lambda: run(author, namespace, "by-author", "authored"))
    refused(lambda: task(trigger, namespace, "by-trigger", command))
    refused(lambda: run(viewer, namespace, "by-viewer", "authored"))
    refused(lambda: list(viewer.list(Secret, namespace=namespace)))
    run(trigger, namespace, "triggered", "authored", payload={"n": 1})
    assert [r.metadata.name for r in viewer.list(TaskRunResource, namespace=namespace)
            if r.metadata and r.metadata.name == "triggered"] == ["triggered"]  # fmt: skip
    # A trigger may cancel, but not rewrite what a run received, nor its status.
    message = refused(
        lambda: trigger.patch(TaskRunResource, "triggered", {"spec": {"payload": {"n": 2}}},
                              namespace=namespace, patch_type=PatchType.MERGE),
        code=422,
    )  # fmt: skip
    assert "spec.payload" in message and "immutable" in message
    trigger.patch(TaskRunResource, "triggered", {"spec": {"cancel": True}},
                  namespace=namespace, patch_type=PatchType.MERGE)  # fmt: skip
    refused(
        lambda: trigger.patch(TaskRunResource.Status, "triggered",
                              {"status": {"phase": "Succeeded"}}, namespace=namespace,
                              patch_type=PatchType.MERGE)
    )  # fmt: skip
    wait_phase(cluster.client, namespace, "triggered", "Canceled", timeout=120)
    for client in clients.values():
        client.close()


def test_install_run_upgrade_uninstall(
    cluster: E2ECluster, namespace: str, helm: Helm, tmp_path: Path, images: Published
) -> None:
    lint = helm("lint", str(CHART), "-f", str(helm.values))
    assert "0 chart(s) failed" in lint.stdout
    helm("install", RELEASE, str(CHART), "-f", str(helm.values), "--wait=false")
    first = wait_operator(helm)
    pod = next(p for p in helm.pods() if p["metadata"]["name"] == first)
    # Under the chart's identity, not the admin's: a kubeconfig for its ServiceAccount.
    assert pod["spec"]["serviceAccountName"] == RELEASE
    assert pod["spec"]["containers"][0]["command"] == ["drover-operator", "run"]
    assert_runs_inside_its_image(pod, images)
    sa = f"system:serviceaccount:{namespace}:{RELEASE}"
    can = cluster.kubectl(
        "auth", "can-i", "create", "pods", "-n", namespace, "--as", sa, check=False
    )
    assert can.stdout.strip() == "yes"
    for verb in ("get", "list", "patch", "update", "delete"):
        # Creates token Secrets; never reads or changes one.
        assert not can_i(cluster, namespace, sa, verb, "secrets"), verb
    elsewhere = cluster.kubectl("auth", "can-i", "list", "pods", "-A", "--as", sa, check=False)
    assert elsewhere.stdout.strip() == "no"  # namespaced mode: only its namespace

    task(
        cluster.client, namespace, "hello", {"image": "busybox", "command": ["sh", "-c", "echo hi"]}
    )
    run_to_success(cluster, namespace, "hello-1")  # busybox: not in the store, a host process

    # An SDK task in the example task image (FROM the runner image), run inside that image.
    task(
        cluster.client, namespace, "sync-customer",
        {"image": EXAMPLES, "entrypoint": "examples.tasks:sync_customer"},
    )  # fmt: skip
    run(cluster.client, namespace, "sync-1", "sync-customer", payload={"customerId": "cus_42"})
    wait_phase(cluster.client, namespace, "sync-1", "Succeeded", timeout=120)
    task_pod = cluster.client.get(Pod, "sync-1-a1", namespace=namespace)
    assert task_pod.status is not None and task_pod.status.containerStatuses is not None
    example = Layout(images.store).find(EXAMPLES)
    assert example is not None
    assert task_pod.status.containerStatuses[0].imageID == example.image_id
    reader = service_account(cluster, namespace, "reader", [rule(GROUP, ["taskruns"], ["get"])])
    record = read_run(helm, namespace, "sync-1", reader)
    assert [step["name"] for step in record["steps"]] == ["fetch_orders", "push_to_crm"]
    assert record["output"] == {"customerId": "cus_42", "ordersCopied": 2}
    check_user_roles(cluster, namespace, tmp_path)

    # An upgrade that changes the pod template replaces the operator; runs keep working.
    helm(
        "upgrade", RELEASE, str(CHART), "-f", str(helm.values),
        "--set", "operator.logLevel=DEBUG", "--wait=false",
    )  # fmt: skip
    second = wait_operator(helm, not_named=first)
    assert second != first
    assert_runs_inside_its_image(
        next(p for p in helm.pods() if p["metadata"]["name"] == second), images
    )
    history = helm("history", RELEASE, "-o", "json")
    assert [r["revision"] for r in json.loads(history.stdout)] == [1, 2]
    run_to_success(cluster, namespace, "hello-2")

    helm("uninstall", RELEASE)
    wait_for(lambda: not helm.pods(), timeout=120, interval=0.5, what="operator pods gone")
    wait_for(lambda: not ready(api_port(helm)), timeout=30, what="the operator's port closed")
    # CRDs stay (Helm never deletes them) and so do the user's resources.
    cluster.kubectl("get", "crd", "taskruns.drover.dev")
