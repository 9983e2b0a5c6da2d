"""Plain pods on the local cluster behave as on a real node: env, phases, exit codes,
restarts, deadlines, scheduling, garbage collection."""

from __future__ import annotations

import base64

import pytest
from lightkube.models.core_v1 import (
    ConfigMapEnvSource,
    ConfigMapKeySelector,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    ObjectFieldSelector,
    ResourceRequirements,
    SecretEnvSource,
    SecretKeySelector,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import ConfigMap, Node, Secret

from drover_localcluster.settings import NODE_NAME
from tests.conftest import E2ECluster, wait_for
from tests.e2e.pods import (
    get,
    json_output,
    logs,
    main_status,
    pod,
    python,
    wait_gone,
    wait_phase,
)

pytestmark = pytest.mark.e2e

PRINT_ENV = "import json, os; print(json.dumps({**os.environ, 'cwd': os.getcwd()}))"


def test_node_is_registered_and_ready(cluster: E2ECluster) -> None:
    node = cluster.client.get(Node, NODE_NAME)
    assert node.status is not None and node.status.conditions is not None
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.capacity is not None and int(node.status.capacity["cpu"]) >= 1
    assert node.status.daemonEndpoints is not None
    assert node.status.daemonEndpoints.kubeletEndpoint is not None
    assert node.status.daemonEndpoints.kubeletEndpoint.Port > 0
    out = cluster.kubectl("get", "nodes", "-o", "name").stdout
    assert f"node/{NODE_NAME}" in out


def test_env_from_secret_configmap_and_downward_api(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(
        Secret(
            metadata=ObjectMeta(name="creds", namespace=namespace),
            data={
                "password": base64.b64encode(b"s3cret").decode(),
                "user": base64.b64encode(b"alice").decode(),
            },
        )
    )
    c.create(
        ConfigMap(
            metadata=ObjectMeta(name="settings", namespace=namespace),
            data={"mode": "fast", "LEVEL": "debug"},
        )
    )
    spec = pod(
        "env",
        namespace,
        python(PRINT_ENV),
        workingDir="/tmp",
        envFrom=[
            EnvFromSource(configMapRef=ConfigMapEnvSource(name="settings")),
            EnvFromSource(secretRef=SecretEnvSource(name="creds"), prefix="DB_"),
        ],
        env=[
            EnvVar(name="PLAIN", value="hello"),
            EnvVar(name="EXPANDED", value="$(PLAIN)-world-$$(PLAIN)"),
            EnvVar(
                name="PASSWORD",
                valueFrom=EnvVarSource(
                    secretKeyRef=SecretKeySelector(name="creds", key="password")
                ),
            ),
            EnvVar(
                name="MODE",
                valueFrom=EnvVarSource(
                    configMapKeyRef=ConfigMapKeySelector(name="settings", key="mode")
                ),
            ),
            EnvVar(
                name="MISSING_OPTIONAL",
                valueFrom=EnvVarSource(
                    secretKeyRef=SecretKeySelector(name="nope", key="x", optional=True)
                ),
            ),
            *[
                EnvVar(name=n, valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath=p)))
                for n, p in [
                    ("POD_NAME", "metadata.name"),
                    ("POD_NS", "metadata.namespace"),
                    ("POD_UID", "metadata.uid"),
                    ("NODE", "spec.nodeName"),
                    ("APP", "metadata.labels['app']"),
                    ("POD_IP", "status.podIP"),
                ]
            ],
        ],
    )
    assert spec.metadata is not None
    spec.metadata.labels = {"app": "env-test"}
    created = c.create(spec)
    wait_phase(c, namespace, "env", "Succeeded")
    env = json_output(c, namespace, "env")
    assert env["PLAIN"] == "hello"
    assert env["EXPANDED"] == "hello-world-$(PLAIN)"
    assert env["PASSWORD"] == "s3cret"
    assert env["DB_user"] == "alice" and env["DB_password"] == "s3cret"
    assert env["mode"] == "fast" and env["LEVEL"] == "debug" and env["MODE"] == "fast"
    assert "MISSING_OPTIONAL" not in env
    assert created.metadata is not None
    assert env["POD_NAME"] == "env" and env["POD_NS"] == namespace
    assert env["POD_UID"] == created.metadata.uid
    assert env["NODE"] == NODE_NAME and env["APP"] == "env-test" and env["POD_IP"] == "127.0.0.1"
    assert env["HOSTNAME"] == "env"
    assert env["cwd"] == "/tmp"
    # The agent's own credentials never leak into pods.
    assert "KUBECONFIG" not in env or "serviceaccount" in env["KUBECONFIG"]


def test_missing_secret_waits_then_runs(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(
        pod(
            "late",
            namespace,
            python("import os; print(os.environ['TOKEN'])"),
            env=[
                EnvVar(
                    name="TOKEN",
                    valueFrom=EnvVarSource(
                        secretKeyRef=SecretKeySelector(name="later", key="token")
                    ),
                )
            ],
        )
    )

    def config_error() -> bool:
        state = main_status(get(c, namespace, "late")).get("state", {})
        return bool(state.get("waiting", {}).get("reason") == "CreateContainerConfigError")

    wait_for(config_error, what="CreateContainerConfigError")
    waiting = main_status(get(c, namespace, "late"))["state"]["waiting"]
    assert 'secret "later" not found' in waiting["message"]
    assert get(c, namespace, "late").status.phase == "Pending"  # type: ignore[union-attr]
    c.create(
        Secret(metadata=ObjectMeta(name="later", namespace=namespace), stringData={"token": "abc"})
    )
    wait_phase(c, namespace, "late", "Succeeded")
    assert logs(c, namespace, "late").strip() == "abc"


@pytest.mark.parametrize(
    ("code", "phase", "reason"), [(0, "Succeeded", "Completed"), (3, "Failed", "Error")]
)
def test_exit_code_decides_phase(
    cluster: E2ECluster, namespace: str, code: int, phase: str, reason: str
) -> None:
    c = cluster.client
    c.create(pod("exit", namespace, ["sh", "-c", f"echo started; exit {code}"]))
    done = wait_phase(c, namespace, "exit", "Succeeded", "Failed")
    assert done.status is not None and done.status.phase == phase
    terminated = main_status(done)["state"]["terminated"]
    assert terminated["exitCode"] == code
    assert terminated["reason"] == reason
    assert terminated["startedAt"] and terminated["finishedAt"]


def test_running_phase_reported_while_process_runs(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(pod("runner", namespace, ["sleep", "600"]))
    running = wait_phase(c, namespace, "runner", "Running")
    status = main_status(running)
    assert "running" in status["state"] and status["ready"] is True
    assert running.status is not None and running.status.startTime is not None
    conditions = {x.type: x.status for x in running.status.conditions or []}
    assert conditions["Ready"] == "True" and conditions["PodScheduled"] == "True"


def test_command_not_found_is_a_start_error(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    c.create(pod("nocmd", namespace, ["definitely-not-a-command-xyz"]))
    done = wait_phase(c, namespace, "nocmd", "Failed")
    terminated = main_status(done)["state"]["terminated"]
    assert terminated["exitCode"] == 128 and terminated["reason"] == "StartError"
    assert "executable file not found" in terminated["message"]


def test_restart_policy_on_failure_restarts_until_success(
    cluster: E2ECluster, namespace: str
) -> None:
    c = cluster.client
    marker = f"/tmp/drover-restart-{namespace}"
    script = (
        f"import os, sys; p = {marker!r}\n"
        "if not os.path.exists(p):\n open(p, 'w').close(); sys.exit(1)\n"
        "os.remove(p); print('second try')"
    )
    c.create(pod("flaky", namespace, python(script), restart_policy="OnFailure"))
    done = wait_phase(c, namespace, "flaky", "Succeeded", "Failed")
    assert done.status is not None and done.status.phase == "Succeeded"
    status = main_status(done)
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_active_deadline_fails_the_pod(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    spec = pod("deadline", namespace, ["sleep", "600"])
    assert spec.spec is not None
    spec.spec.activeDeadlineSeconds = 2
    c.create(spec)
    done = wait_phase(c, namespace, "deadline", "Failed")
    assert done.status is not None and done.status.reason == "DeadlineExceeded"
    assert main_status(done)["state"]["terminated"]["exitCode"] == 143  # SIGTERM


def test_scheduler_binds_pods_and_reports_unschedulable(
    cluster: E2ECluster, namespace: str
) -> None:
    c = cluster.client
    c.create(pod("scheduled", namespace, ["true"]))
    done = wait_phase(c, namespace, "scheduled", "Succeeded")
    assert done.spec is not None and done.spec.nodeName == NODE_NAME
    c.create(
        pod(
            "too-big", namespace, ["true"], resources=ResourceRequirements(requests={"cpu": "1000"})
        )
    )

    def unschedulable() -> bool:
        status = get(c, namespace, "too-big").status
        conditions = {x.type: x for x in (status.conditions or [])} if status else {}
        cond = conditions.get("PodScheduled")
        return cond is not None and cond.status == "False" and cond.reason == "Unschedulable"

    wait_for(unschedulable, what="PodScheduled=False/Unschedulable")
    assert get(c, namespace, "too-big").status.phase == "Pending"  # type: ignore[union-attr]


def test_owner_reference_garbage_collection(cluster: E2ECluster, namespace: str) -> None:
    c = cluster.client
    owner = c.create(ConfigMap(metadata=ObjectMeta(name="owner", namespace=namespace)))
    assert owner.metadata is not None
    spec = pod("owned", namespace, ["sleep", "600"])
    assert spec.metadata is not None
    spec.metadata.ownerReferences = [
        OwnerReference(
            apiVersion="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid or ""
        )
    ]
    c.create(spec)
    wait_phase(c, namespace, "owned", "Running")
    c.delete(ConfigMap, "owner", namespace=namespace)
    wait_gone(c, namespace, "owned")
