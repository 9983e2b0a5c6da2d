"""The chart's optional Task policy (a ValidatingAdmissionPolicy) on the real API server: bad
Tasks are refused at `kubectl apply` saying why, good ones are accepted, and only the
namespaces the policy is bound to are affected."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from drover_localcluster.binaries import ensure_helm
from tests.conftest import REPO_ROOT, E2ECluster, wait_for

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "helm" / "drover"


def render_policy(namespace: str, *sets: str) -> str:
    """The chart's Task policy, bound to `namespace` (namespaced mode), as YAML."""
    args = [
        "template", f"policy-{secrets.token_hex(3)}", str(CHART), "-n", "drover-system",
        "--show-only", "templates/task-policy.yaml",
        "--set", "database.url=postgresql://x@db/drover", "--set", "taskPolicy.enabled=true",
        "--set", f"operator.namespaces={{{namespace}}}",
        *[arg for s in sets for arg in ("--set", s)],
    ]  # fmt: skip
    proc = subprocess.run(
        [str(ensure_helm()), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def task(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "drover.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"image": "busybox", "command": ["true"], **spec},
    }


def pod(**spec: Any) -> dict[str, Any]:
    return {"podTemplate": {"spec": spec}}


def apply(
    cluster: E2ECluster, namespace: str, manifest: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", "-n", namespace, *extra, "-f", "-", input=json.dumps(manifest), check=False
    )


@pytest.fixture(scope="module")
def policy(cluster: E2ECluster, drover_crds: None) -> Iterator[str]:
    """A namespace of the module's own, and the policy (allowing ServiceAccount `worker`) in
    force there. Refused Tasks are never created, so the cases cannot interfere."""
    namespace = f"task-policy-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    rendered = render_policy(namespace, "taskPolicy.serviceAccountNames={worker}")
    cluster.kubectl("apply", "-f", "-", input=rendered)
    probe = task("probe", **pod(hostPID=True))
    wait_for(
        lambda: apply(cluster, namespace, probe, "--dry-run=server").returncode != 0,
        interval=0.2,
        what="the Task policy in force",
    )
    yield namespace
    cluster.kubectl("delete", "-f", "-", input=rendered)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@dataclass(frozen=True)
class BadTask:
    id: str
    spec: dict[str, Any]
    message: str


TOKEN = "drover-token-other-run-a1-0123456789abcdef"
BAD_TASKS = [
    BadTask("service-account", {"serviceAccountName": "admin"}, "may not run as admin"),
    BadTask("service-account-in-template", pod(serviceAccountName="admin"), "admin"),
    BadTask("service-account-alias", pod(serviceAccount="admin"), "admin"),
    BadTask(
        "token-without-account",
        pod(automountServiceAccountToken=True),
        "automountServiceAccountToken",
    ),
    BadTask("host-network", pod(hostNetwork=True), "hostNetwork, hostPID and hostIPC"),
    BadTask("host-pid", pod(hostPID=True), "hostNetwork, hostPID and hostIPC"),
    BadTask("host-ipc", pod(hostIPC=True), "hostNetwork, hostPID and hostIPC"),
    BadTask(
        "privileged-task-container",
        pod(containers=[{"name": "task", "securityContext": {"privileged": True}}]),
        "privileged",
    ),
    BadTask(
        "privileged-sidecar",
        pod(containers=[{"name": "side", "image": "x", "securityContext": {"privileged": True}}]),
        "privileged",
    ),
    BadTask(
        "privileged-init",
        pod(initContainers=[{"name": "i", "image": "x", "securityContext": {"privileged": True}}]),
        "privileged",
    ),
    BadTask("host-path", pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "root"),
    BadTask(
        "volume-type-not-allowed",
        pod(volumes=[{"name": "share", "nfs": {"server": "nfs", "path": "/"}}]),
        "only these volume types",
    ),
    BadTask(
        "token-secret-env",
        {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": TOKEN, "key": "token"}}}]},
        "token Secrets",
    ),
    BadTask("token-secret-env-from", {"envFrom": [{"secretRef": {"name": TOKEN}}]}, "token"),
    BadTask(
        "token-secret-sidecar-env",
        pod(
            containers=[{"name": "side", "image": "x", "envFrom": [{"secretRef": {"name": TOKEN}}]}]
        ),
        "token Secrets",
    ),
    BadTask(
        "token-secret-volume",
        pod(volumes=[{"name": "t", "secret": {"secretName": TOKEN}}]),
        "token Secrets",
    ),
    BadTask(
        "token-secret-projected",
        pod(volumes=[{"name": "t", "projected": {"sources": [{"secret": {"name": TOKEN}}]}}]),
        "token Secrets",
    ),
]


@pytest.mark.parametrize("case", BAD_TASKS, ids=lambda c: c.id)
def test_bad_tasks_are_refused(cluster: E2ECluster, policy: str, case: BadTask) -> None:
    proc = apply(cluster, policy, task("bad", **case.spec))
    assert proc.returncode != 0, proc.stdout
    assert "denied request" in proc.stderr and case.message in proc.stderr, proc.stderr
    assert cluster.kubectl("get", "-n", policy, "task", "bad", check=False).returncode != 0


def test_good_tasks_are_accepted_and_cannot_be_changed_into_bad_ones(
    cluster: E2ECluster, policy: str
) -> None:
    good = task(
        "good",
        serviceAccountName="worker",
        env=[{"name": "CRM", "valueFrom": {"secretKeyRef": {"name": "crm", "key": "token"}}}],
        envFrom=[{"secretRef": {"name": "settings"}}],
        podTemplate={
            "spec": {
                "automountServiceAccountToken": True,
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "creds", "secret": {"secretName": "crm"}},
                    {"name": "config", "configMap": {"name": "settings"}},
                ],
                "containers": [
                    {
                        "name": "task",
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                        "securityContext": {"privileged": False, "runAsNonRoot": True},
                    }
                ],
            }
        },
    )
    for manifest in (good, task("plain"), task("explicit", **pod(hostNetwork=False))):
        proc = apply(cluster, policy, manifest)
        assert proc.returncode == 0, proc.stderr
    proc = apply(cluster, policy, task("plain", serviceAccountName="admin"))
    assert proc.returncode != 0 and "may not run as admin" in proc.stderr
    spec = json.loads(cluster.kubectl("get", "-n", policy, "task", "plain", "-o", "json").stdout)
    assert "serviceAccountName" not in spec["spec"]


def test_only_the_bound_namespaces_are_affected(
    cluster: E2ECluster, policy: str, namespace: str
) -> None:
    assert apply(cluster, policy, task("host", **pod(hostPID=True))).returncode != 0
    proc = apply(cluster, namespace, task("host", **pod(hostPID=True)))
    assert proc.returncode == 0, proc.stderr


def test_warn_mode_admits_with_a_warning(
    cluster: E2ECluster, namespace: str, drover_crds: None
) -> None:
    rendered = render_policy(namespace, "taskPolicy.validationActions={Warn}")
    cluster.kubectl("apply", "-f", "-", input=rendered)
    try:
        probe = task("probe", **pod(hostPID=True))

        def warned() -> bool:
            proc = apply(cluster, namespace, probe, "--dry-run=server")
            return proc.returncode == 0 and "hostPID" in proc.stderr

        wait_for(warned, interval=0.2, what="the Task policy warning")
        proc = apply(cluster, namespace, task("admin", serviceAccountName="admin"))
        assert proc.returncode == 0, proc.stderr
        assert "Warning" in proc.stderr and "may not run as admin" in proc.stderr
    finally:
        cluster.kubectl("delete", "-f", "-", input=rendered)
