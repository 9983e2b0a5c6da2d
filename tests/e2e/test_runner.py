"""Durable SDK tasks end to end: checkpoints survive a SIGKILL, AbortRun and non-determinism
fail without retry, a frozen runner is found by its missing heartbeats and resumed, a zombie
attempt is refused, Postgres can restart mid-run, and the API refuses strangers."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Pod, Secret, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from drover.protocol import PROTOCOL_HEADER
from drover_localcluster.postgres import Postgres
from drover_localcluster.processes import alive, free_port
from tests.conftest import E2ECluster, private_directory, wait_for
from tests.e2e.operator_support import OperatorProcess, run, status, task, wait_phase

pytestmark = pytest.mark.e2e

SDK = "tests.e2e.sdk_tasks"


def sdk_task(cluster: E2ECluster, namespace: str, name: str, function: str, **spec: Any) -> None:
    task(
        cluster.client,
        namespace,
        name,
        {
            "image": "busybox",
            "entrypoint": f"{SDK}:{function}",
            "timeouts": {"heartbeat": "3s"},
            "retry": {"maxAttempts": 3, "minDelay": "1s", "randomize": False},
            **spec,
        },
    )


def effects(directory: Path) -> Counter[str]:
    path = directory / "effects"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def token(cluster: E2ECluster, namespace: str, pod: str) -> str:
    """The attempt's token, from the Secret its pod's `DROVER_TOKEN` comes from."""
    spec = cluster.client.get(Pod, pod, namespace=namespace).spec
    assert spec is not None
    env = {e.name: e for e in spec.containers[0].env or []}
    source = env["DROVER_TOKEN"].valueFrom
    assert source is not None and source.secretKeyRef is not None and source.secretKeyRef.name
    secret = cluster.client.get(Secret, source.secretKeyRef.name, namespace=namespace)
    assert secret.data is not None
    return base64.b64decode(secret.data["token"]).decode()


def call(
    operator: OperatorProcess,
    method: str,
    path: str,
    bearer: str | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        operator.api_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {bearer}"} if bearer else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_sigkill_after_step_two_resumes_from_checkpoints(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "order", "three_steps")
    uid = run(c, namespace, "order-1", "order", payload={"dir": str(tmp_path), "crash": True})
    st = wait_phase(c, namespace, "order-1", "Succeeded", "Failed")
    assert st["phase"] == "Succeeded", st
    assert st["attempt"] == 2
    assert st["attempts"][0]["exitCode"] == 137  # SIGKILL
    # Steps 1 and 2 ran once: attempt 2 got their results back from the checkpoints.
    assert effects(tmp_path) == Counter({"fetch": 1, "charge": 1, "ship": 1})
    assert st["output"] == {"order": 7, "charged": 12.5, "status": "shipped", "attempt": 2}
    assert st["metadata"] == {"shipped": True}
    with psycopg.connect(operator.dsn) as conn:
        steps = conn.execute(
            "SELECT seq, name, attempt FROM drover_steps WHERE run_id = %s ORDER BY seq", (uid,)
        ).fetchall()
        logs = conn.execute("SELECT message FROM drover_logs WHERE run_id = %s", (uid,)).fetchall()
    assert [(s[0], s[1], s[2]) for s in steps] == [
        (0, "fetch", 1),
        (1, "charge", 1),
        (2, "ship", 2),
    ]
    # Logs outlive the pods, in Postgres.
    assert any("charged" in line[0] for line in logs)


def test_abort_run_fails_after_one_attempt(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "abort", "aborts")
    run(c, namespace, "abort-1", "abort", payload={})
    st = wait_phase(c, namespace, "abort-1", "Failed")
    assert st["attempt"] == 1
    assert st["error"] == {
        "type": "AbortRun",
        "message": "customer does not exist",
        "retryable": False,
    }


def test_an_error_whose_name_no_condition_can_hold_still_ends_the_taskrun(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    # The failure's reason is the exception's class name, `_OopsError`: put in the Succeeded
    # condition as it is, the API server refused every status write and the TaskRun never
    # showed that its run had failed.
    c = cluster.client
    sdk_task(cluster, namespace, "oops", "raises_a_private_error")
    run(c, namespace, "oops-1", "oops", payload={})
    st = wait_phase(c, namespace, "oops-1", "Failed")
    assert st["error"]["type"] == "_OopsError"
    [succeeded] = st["conditions"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", "OopsError")
    assert st["attempts"][-1]["reason"] == "_OopsError"


def test_non_determinism_fails_without_retry(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "fickle", "changes_its_mind", retry={"maxAttempts": 5})
    run(c, namespace, "fickle-1", "fickle", payload={})
    st = wait_phase(c, namespace, "fickle-1", "Failed")
    assert st["attempt"] == 2
    assert st["error"]["type"] == "NonDeterminismError" and st["error"]["retryable"] is False
    assert "'a'" in st["error"]["message"] and "'b'" in st["error"]["message"]


def test_payload_is_parsed_into_the_annotation(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "greet", "greets")
    run(c, namespace, "good", "greet", payload={"name": "ada", "times": 2})
    run(c, namespace, "bad", "greet", payload={"name": 5})
    assert wait_phase(c, namespace, "good", "Succeeded")["output"] == "hello ada hello ada"
    bad = wait_phase(c, namespace, "bad", "Failed")
    assert bad["attempt"] == 1 and bad["error"]["type"] == "InvalidPayload"
    assert bad["error"]["message"].startswith("payload.name:")


def test_async_tasks_and_steps(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    sdk_task(cluster, namespace, "async", "async_task")
    run(cluster.client, namespace, "async-1", "async", payload={"x": 21})
    st = wait_phase(cluster.client, namespace, "async-1", "Succeeded", "Failed")
    assert st["output"] == {"value": 42}, st


def test_frozen_runner_is_stalled_resumed_and_its_zombie_refused(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "freeze", "freezes")
    uid = run(c, namespace, "freeze-1", "freeze", payload={"dir": str(tmp_path)})
    wait_phase(c, namespace, "freeze-1", "Running")

    def pid() -> int | None:
        out = cluster.kubectl("logs", "-n", namespace, "freeze-1-a1", check=False).stdout
        found = re.search(r"pid (\d+)", out)
        return int(found.group(1)) if found else None

    frozen = wait_for(pid, what="the runner's pid")
    old_token = token(cluster, namespace, "freeze-1-a1")
    os.kill(frozen, signal.SIGSTOP)
    try:
        st = wait_phase(c, namespace, "freeze-1", "Succeeded", "Failed")
    finally:
        if alive(frozen):
            os.kill(frozen, signal.SIGKILL)
    assert st["phase"] == "Succeeded" and st["attempt"] == 2
    assert st["attempts"][0]["reason"] == "Stalled"
    assert st["output"] == "ready on attempt 2"
    assert effects(tmp_path) == Counter({"prepare": 1})  # resumed from the checkpoint
    wait_for(
        lambda: (
            "freeze-1-a1"
            not in {p.metadata.name for p in c.list(Pod, namespace=namespace) if p.metadata}
        ),
        what="the stalled pod removed",
    )
    # The frozen attempt's credential no longer works, and changes nothing.
    base = f"/v1/runs/{uid}"
    for method, path, body in [
        ("POST", "/heartbeat", None),
        ("PUT", "/steps", {"steps": [{"seq": 5, "name": "zombie", "value": 1}]}),
        ("POST", "/complete", {"output": "zombie"}),
    ]:
        code, problem = call(operator, method, base + path, old_token, body)
        assert code == 409, (path, code, problem)
        assert problem["type"] == "attempt-inactive"
    assert status(c, namespace, "freeze-1")["output"] == "ready on attempt 2"
    with psycopg.connect(operator.dsn) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM drover_steps WHERE run_id = %s", (uid,)
            ).fetchall()
        ]
    assert names == ["prepare"]


@pytest.fixture
def private_postgres() -> Iterator[Postgres]:
    """A Postgres of the test's own, to restart without disturbing tests running beside it."""
    server = Postgres(private_directory("drover-test-pg-"), free_port())
    server.start(marker=f"drover-tests-{os.getpid()}")
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.directory, ignore_errors=True)


def test_postgres_restart_during_a_run_loses_nothing(
    cluster: E2ECluster,
    namespace: str,
    drover_crds: None,
    private_postgres: Postgres,
    tmp_path: Path,
) -> None:
    c = cluster.client
    log = cluster.local.directory / "logs" / f"operator-{namespace}.log"
    operator = OperatorProcess(cluster, namespace, private_postgres.dsn, log).start()
    try:
        sdk_task(cluster, namespace, "steady", "slow_steps", timeouts={"heartbeat": "30s"})
        run(
            c,
            namespace,
            "steady-1",
            "steady",
            payload={"dir": str(tmp_path), "steps": 20, "pause": 0.2},
        )
        wait_for(lambda: sum(effects(tmp_path).values()) >= 5, what="a few steps done")
        private_postgres.restart(marker=f"drover-tests-{os.getpid()}")
        st = wait_phase(c, namespace, "steady-1", "Succeeded", "Failed", timeout=180)
    finally:
        operator.stop()
    assert st["phase"] == "Succeeded", st
    assert st["output"] == sum(range(20))
    assert effects(tmp_path) == Counter({f"part-{i}": 1 for i in range(20)})


def test_api_refuses_strangers(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "idle", "waits")
    first = run(c, namespace, "idle-1", "idle")
    second = run(c, namespace, "idle-2", "idle")
    wait_phase(c, namespace, "idle-1", "Running")
    wait_phase(c, namespace, "idle-2", "Running")
    mine = token(cluster, namespace, "idle-1-a1")
    assert call(operator, "GET", f"/v1/runs/{first}/context", mine)[0] == 200
    assert call(operator, "GET", f"/v1/runs/{first}/context", None)[0] == 401
    assert call(operator, "GET", f"/v1/runs/{first}/context", "not-a-token")[0] == 401
    forged = f"{first}.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    assert call(operator, "GET", f"/v1/runs/{first}/context", forged)[0] == 401
    code, problem = call(operator, "GET", f"/v1/runs/{second}/context", mine)
    assert code == 403 and problem["type"] == "forbidden"
    code, problem = call(operator, "PUT", f"/v1/runs/{first}/steps", mine, {"steps": []})
    assert code == 422 and "steps" in problem["message"]
    big = {"steps": [{"seq": 0, "name": "huge", "value": "x" * (300 * 1024)}]}
    assert call(operator, "PUT", f"/v1/runs/{first}/steps", mine, big)[0] == 413


def test_protocol_versions_the_operator_does_not_serve_are_refused(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "idle", "waits")
    uid = run(c, namespace, "idle-1", "idle")
    wait_phase(c, namespace, "idle-1", "Running")
    mine = token(cluster, namespace, "idle-1-a1")
    path = f"/v1/runs/{uid}/context"
    assert call(operator, "GET", path, mine, headers={PROTOCOL_HEADER: "1"})[0] == 200
    code, problem = call(operator, "GET", path, mine, headers={PROTOCOL_HEADER: "99"})
    assert code == 400 and problem["type"] == "unsupported-protocol"
    assert "upgrade the operator" in problem["message"]
    step = {"steps": [{"seq": 0, "name": "s", "value": 1}]}
    code, _ = call(operator, "PUT", f"/v1/runs/{uid}/steps", mine, step, {PROTOCOL_HEADER: "0"})
    assert code == 400


def test_api_fuzzed_from_its_openapi_document_never_fails_with_5xx(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "target", "waits")
    uid = run(c, namespace, "target-1", "target")
    wait_phase(c, namespace, "target-1", "Running")
    bearer = token(cluster, namespace, "target-1-a1")
    # The served document, with run_id pinned to the live run so requests get past auth.
    code, document = call(operator, "GET", "/v1/openapi.json", None)
    assert code == 200
    pinned = {
        "name": "run_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [uid]},
    }
    for path, item in document["paths"].items():
        if "{run_id}" in path:
            item["parameters"] = [pinned]
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(document))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(schema),
            "--url",
            operator.api_url,
            "--header",
            f"Authorization: Bearer {bearer}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    cases = re.search(r"(\d+) generated, \d+ passed", proc.stdout)
    assert cases is not None and int(cases.group(1)) >= 100, proc.stdout[-2000:]


def test_history_is_readable_with_kubernetes_rbac_after_the_pod_is_gone(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "order", "three_steps")
    run(c, namespace, "order-1", "order", payload={"dir": str(tmp_path)})
    wait_phase(c, namespace, "order-1", "Succeeded")
    c.delete(Pod, "order-1-a1", namespace=namespace, grace_period=0)
    for name, verbs in (("viewer", ["get"]), ("stranger", [])):
        c.create(ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)))
        if verbs:
            c.create(
                Role(
                    metadata=ObjectMeta(name=name, namespace=namespace),
                    rules=[
                        PolicyRule(apiGroups=["drover.dev"], resources=["taskruns"], verbs=verbs)
                    ],
                )
            )
            c.create(
                RoleBinding(
                    metadata=ObjectMeta(name=name, namespace=namespace),
                    roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=name),
                    subjects=[Subject(kind="ServiceAccount", name=name, namespace=namespace)],
                )
            )

    def sa_token(name: str) -> str:
        request = ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[]))
        issued = c.create(request, name, namespace=namespace)
        assert issued.status is not None
        return str(issued.status.token)

    path = f"/v1/namespaces/{namespace}/taskruns/order-1"
    code, record = call(operator, "GET", path, sa_token("viewer"))
    assert code == 200
    assert record["output"]["status"] == "shipped"
    assert [s["name"] for s in record["steps"]] == ["fetch", "charge", "ship"]
    code, logs = call(operator, "GET", path + "/logs", sa_token("viewer"))
    assert code == 200 and any("charged" in line["message"] for line in logs["lines"])
    assert call(operator, "GET", path, sa_token("stranger"))[0] == 403
    assert call(operator, "GET", path, None)[0] == 401
