"""Deletion, logs, ServiceAccount identity, and the node going away."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Node, Pod, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from drover_localcluster.cluster import LocalCluster
from drover_localcluster.images.build import Published
from drover_localcluster.processes import alive, marked_pids
from tests.conftest import E2ECluster, wait_for
from tests.e2e.pods import logs, main_status, pod, python, wait_gone, wait_phase

pytestmark = pytest.mark.e2e


def _pids_from_logs(cluster: E2ECluster, namespace: str, name: str, count: int) -> list[int]:
    def printed() -> list[int] | None:
        pids = [int(x) for x in logs(cluster.client, namespace, name).split()]
        return pids if len(pids) >= count else None

    return wait_for(printed, what="pids printed by the pod")


def test_deletion_kills_the_whole_process_tree(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    # A shell with two background children, all printing their pids.
    # `$$$$` is `$$` after the kubelet's `$(VAR)` expansion, which turns `$$` into `$`.
    script = "sleep 600 & echo $!; sleep 600 & echo $!; echo $$$$; wait"
    c.create(pod("tree", namespace, ["sh", "-c", script]))
    wait_phase(c, namespace, "tree", "Running")
    pids = _pids_from_logs(cluster, namespace, "tree", 3)
    assert all(alive(p) for p in pids)
    c.delete(Pod, "tree", namespace=namespace)
    wait_gone(c, namespace, "tree")
    assert not any(alive(p) for p in pids)


def test_sigterm_ignored_is_killed_after_grace(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(os.getpid(), flush=True); time.sleep(600)"
    )
    c.create(pod("stubborn", namespace, python(code)))
    wait_phase(c, namespace, "stubborn", "Running")
    [pid] = _pids_from_logs(cluster, namespace, "stubborn", 1)
    c.delete(Pod, "stubborn", namespace=namespace, grace_period=1)
    # Still there after SIGTERM: the pod object waits for the agent to finish the deletion.
    wait_gone(c, namespace, "stubborn")
    assert not alive(pid)


def test_kubectl_logs(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(
        pod(
            "talker",
            namespace,
            ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2"],
        )
    )
    wait_phase(c, namespace, "talker", "Succeeded")
    out = cluster.kubectl("logs", "-n", namespace, "talker").stdout
    assert out.splitlines() == ["line 1", "line 2", "line 3", "oops"]
    tail = cluster.kubectl("logs", "-n", namespace, "talker", "--tail=2").stdout
    assert tail.splitlines() == ["line 3", "oops"]
    stamped = cluster.kubectl("logs", "-n", namespace, "talker", "--timestamps").stdout
    assert stamped.splitlines()[0].endswith("Z line 1")


def test_kubectl_logs_follow_streams_until_exit(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(
        pod("stream", namespace, ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.5; done"])
    )
    wait_phase(c, namespace, "stream", "Running", "Succeeded")
    out = cluster.kubectl("logs", "-f", "-n", namespace, "stream").stdout
    assert out.splitlines() == ["tick 1", "tick 2", "tick 3"]


def test_pod_acts_under_its_service_account(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(ServiceAccount(metadata=ObjectMeta(name="reader", namespace=namespace)))
    c.create(
        Role(
            metadata=ObjectMeta(name="pod-reader", namespace=namespace),
            rules=[PolicyRule(apiGroups=[""], resources=["pods"], verbs=["get", "list"])],
        )
    )
    c.create(
        RoleBinding(
            metadata=ObjectMeta(name="reader", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
            subjects=[Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        )
    )
    kubectl = str(cluster.kubectl_path)
    script = (
        f"{kubectl} auth whoami -o jsonpath='{{.status.userInfo.username}}'; echo; "
        f"{kubectl} get pods -o name >/dev/null && echo pods-ok; "
        f"{kubectl} get secrets 2>&1 | grep -q Forbidden && echo secrets-forbidden"
    )
    spec = pod("whoami", namespace, ["sh", "-c", script])
    assert spec.spec is not None
    spec.spec.serviceAccountName = "reader"
    c.create(spec)
    wait_phase(c, namespace, "whoami", "Succeeded")
    lines = logs(c, namespace, "whoami").splitlines()
    assert lines == [f"system:serviceaccount:{namespace}:reader", "pods-ok", "secrets-forbidden"]


def test_no_token_when_automount_is_off(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    spec = pod("notoken", namespace, python("import os; print(os.environ.get('KUBECONFIG'))"))
    assert spec.spec is not None
    spec.spec.automountServiceAccountToken = False
    c.create(spec)
    wait_phase(c, namespace, "notoken", "Succeeded")
    assert logs(c, namespace, "notoken").strip() == "None"


def test_node_turns_not_ready_after_its_agent_stops(cluster: E2ECluster) -> None:
    name = f"drover-extra-{secrets.token_hex(3)}"
    # Tainted: tests running meanwhile must never have a pod scheduled on a node about to die.
    cluster.local.start_node(name, taints=[{"key": "drover.dev/test", "effect": "NoSchedule"}])
    try:
        cluster.local.stop_node(name, kill=True)

        def not_ready() -> bool:
            node = cluster.client.get(Node, name)
            conditions = {x.type: x for x in (node.status.conditions or [])} if node.status else {}
            ready = conditions.get("Ready")
            return ready is not None and ready.status != "True"

        wait_for(not_ready, timeout=120, what=f"node {name} NotReady")
        ready = {x.type: x for x in cluster.client.get(Node, name).status.conditions}["Ready"]  # type: ignore[union-attr]
        assert ready.status == "Unknown" and ready.reason == "NodeStatusUnknown"
    finally:
        cluster.client.delete(Node, name)


def test_cluster_down_leaves_no_process(images: Published) -> None:
    """Even a pod process that escaped into its own session is stopped by cluster-down, and
    so is a pod inside an image."""
    directory = Path(tempfile.mkdtemp(prefix="drover-test-down-"))
    directory.chmod(0o755)
    other = LocalCluster(directory)
    try:
        other.up()
        assert other.state is not None
        marker = other.state.marker
        client = Client(KubeConfig.from_file(str(other.kubeconfig)))
        client.create(pod("escape", "default", ["sh", "-c", "setsid sleep 600 & echo $!; wait"]))
        wait_phase(client, "default", "escape", "Running")

        def printed() -> int | None:
            out = logs(client, "default", "escape").split()
            return int(out[0]) if out else None

        escaped = wait_for(printed, what="the escaped pid")
        inside = pod("inside", "default", ["sleep", "600"])
        assert inside.spec is not None
        inside.spec.containers[0].image = "ghcr.io/drover-dev/drover-runner:0.1.0"
        client.create(inside)
        running = wait_phase(client, "default", "inside", "Running")
        contained = int(main_status(running)["containerID"].split("://")[1])
        client.close()
        assert os.getsid(escaped) == escaped  # its own session, outside the pod's group
        assert {escaped, contained} <= set(marked_pids(marker))
        other.down()
        assert marked_pids(marker) == []
        assert not alive(escaped) and not alive(contained)
    finally:
        other.down()
        shutil.rmtree(directory, ignore_errors=True)
