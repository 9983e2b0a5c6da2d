"""The run lifecycle on a real cluster: success, retries and their spacing, non-retryable
exit codes, timeouts, cancel, deletion, missing Tasks, long names, pending timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from lightkube import ApiError
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from drover.protocol.names import FINALIZER, LABEL_RUN, LABEL_TASK
from drover_operator.kube import TaskResource, TaskRunResource
from tests.conftest import REPO_ROOT, E2ECluster, wait_for
from tests.e2e import ledger
from tests.e2e.operator_support import (
    OperatorProcess,
    get_run,
    parse_time,
    run,
    status,
    task,
    wait_phase,
)
from tests.e2e.podwatch import watching

pytestmark = pytest.mark.e2e


def _pods(cluster: E2ECluster, namespace: str) -> list[Pod]:
    return list(cluster.client.list(Pod, namespace=namespace))


def test_command_task_succeeds_with_one_pod(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    task(c, namespace, "echo", {"image": "busybox", "command": ledger.command(tmp_path)})
    with watching(cluster, namespace) as watch:
        uid = run(c, namespace, "echo-1", "echo")
        st = wait_phase(c, namespace, "echo-1", "Succeeded")
        wait_for(lambda: not watch.live(), what="the pod ended")
    # Exactly once, judged from outside: one execution in the ledger, one pod ever seen.
    assert [(r.run, r.attempt) for r in ledger.read(tmp_path)] == [("echo-1", 1)]
    assert [p.name for p in watch.matching()] == ["echo-1-a1"]
    assert st["attempt"] == 1 and st["runId"] == uid
    [attempt] = st["attempts"]
    assert attempt["exitCode"] == 0 and attempt["podName"] == "echo-1-a1"
    condition = {x["type"]: x for x in st["conditions"]}["Succeeded"]
    assert condition["status"] == "True"
    assert st["startTime"] and st["completionTime"]
    [pod] = _pods(cluster, namespace)
    assert pod.metadata is not None and pod.metadata.labels is not None
    assert pod.metadata.labels["drover.dev/run-uid"] == uid
    assert pod.metadata.labels["drover.dev/task"] == "echo"
    assert pod.metadata.labels["drover.dev/attempt"] == "1"
    [owner] = pod.metadata.ownerReferences or []
    assert owner.kind == "TaskRun" and owner.uid == uid and owner.controller
    assert pod.spec is not None and pod.spec.restartPolicy == "Never"

    def posted() -> set[str] | None:
        reasons = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=echo-1",
            "-o",
            "jsonpath={.items[*].reason}",
        ).stdout.split()
        return set(reasons) if {"Started", "Succeeded"} <= set(reasons) else None

    # Events are posted after the status that they follow: awaited, not assumed.
    events = wait_for(posted, what="the Started and Succeeded events")
    # Queued and Admitted are in the run's history only (its status says as much).
    assert not {"Queued", "Admitted"} & set(events)


def test_retries_are_counted_and_spaced(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "flaky",
        {
            "image": "busybox",
            "command": ["sh", "-c", "exit 1"],
            "retry": {
                "maxAttempts": 3,
                "minDelay": "1s",
                "factor": 2,
                "maxDelay": "10s",
                "randomize": False,
            },
        },
    )
    run(c, namespace, "flaky-1", "flaky")
    st = wait_phase(c, namespace, "flaky-1", "Failed")
    attempts = st["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3] and st["attempt"] == 3
    assert all(a["exitCode"] == 1 for a in attempts)
    # Delay before attempt n+1 is minDelay * factor^(n-1): 1s, then 2s.
    for before, after, delay in ((attempts[0], attempts[1], 1.0), (attempts[1], attempts[2], 2.0)):
        gap = parse_time(after["startTime"]) - parse_time(before["finishTime"])
        assert gap.total_seconds() >= delay
    assert st["error"]["message"] == "exit code 1"
    assert len(_pods(cluster, namespace)) == 3


def test_non_retryable_exit_code_fails_at_once(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "bad-input",
        {
            "image": "busybox",
            "command": ["sh", "-c", "exit 2"],
            "retry": {"maxAttempts": 5, "nonRetryableExitCodes": [2]},
        },
    )
    run(c, namespace, "bad-1", "bad-input")
    st = wait_phase(c, namespace, "bad-1", "Failed")
    assert st["attempt"] == 1 and len(st["attempts"]) == 1
    assert st["error"]["retryable"] is False
    assert "non-retryable" in st["error"]["message"]


def test_max_duration_times_out(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "slow",
        {
            "image": "busybox",
            "command": ["sleep", "600"],
            "timeouts": {"maxDuration": "2s"},
            "retry": {"maxAttempts": 1},
        },
    )
    run(c, namespace, "slow-1", "slow")
    st = wait_phase(c, namespace, "slow-1", "TimedOut", "Failed")
    assert st["phase"] == "TimedOut"
    assert st["attempts"][0]["reason"] == "TimedOut"


def test_cancel_stops_the_pod_and_frees_the_slot(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "one-at-a-time",
        {
            "image": "busybox",
            "command": ["sleep", "600"],
            "concurrency": {"limit": 1},
        },
    )
    with watching(cluster, namespace) as watch:
        run(c, namespace, "first", "one-at-a-time")
        wait_phase(c, namespace, "first", "Running")
        run(c, namespace, "second", "one-at-a-time")
        # Queued is a decision the operator made (the phase is set), not the absence of one.
        wait_phase(c, namespace, "second", "Queued")
        assert not watch.matching(**{LABEL_RUN: "second"})  # and no pod was made for it
        c.patch(
            TaskRunResource,
            "first",
            {"spec": {"cancel": True}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        st = wait_phase(c, namespace, "first", "Canceled")
        assert st["conditions"][0]["status"] == "False"
        wait_for(lambda: not watch.live(**{LABEL_RUN: "first"}), what="the canceled pod gone")
        wait_phase(c, namespace, "second", "Running")  # the freed slot admitted the next run
        wait_for(lambda: watch.live(**{LABEL_RUN: "second"}), what="the next run's pod")
    # Cancel frees the slot at once, while the canceled pod is still being deleted: the two
    # pods may overlap for a moment (docs/decisions.md, "Slots are released by the result").
    assert watch.peak({LABEL_TASK: "one-at-a-time"}) <= 2


def test_a_taskrun_created_canceled_ends_canceled_without_a_pod(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    """`spec.cancel: true` already when the operator first sees the TaskRun (a cancel that
    came before the operator's watch did): the run is never admitted, and ends Canceled."""
    c = cluster.client
    task(c, namespace, "quick", {"image": "busybox", "command": ["true"]})
    with watching(cluster, namespace) as watch:
        run(c, namespace, "never", "quick", cancel=True)
        st = wait_phase(c, namespace, "never", "Canceled")
        run(c, namespace, "after", "quick")  # the operator has seen everything before it
        wait_phase(c, namespace, "after", "Succeeded")
        assert not watch.matching(**{LABEL_RUN: "never"})
    assert st["conditions"][0]["reason"] == "Canceled"


def test_deleting_a_taskrun_removes_its_pod_and_closes_its_record(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(c, namespace, "long", {"image": "busybox", "command": ["sleep", "600"]})
    uid = run(c, namespace, "doomed", "long")
    wait_phase(c, namespace, "doomed", "Running")
    meta = get_run(c, namespace, "doomed").metadata
    # No finalizer: the watch's DELETED event closes the record (docs/decisions.md).
    assert meta is not None and FINALIZER not in (meta.finalizers or [])
    c.delete(TaskRunResource, "doomed", namespace=namespace)

    def gone() -> bool:
        try:
            get_run(c, namespace, "doomed")
        except ApiError as exc:
            return exc.status.code == 404
        return False

    wait_for(gone, what="TaskRun deleted")
    # The pod goes with its owner (garbage collection) whether or not the operator has
    # acted yet; its record is closed when the operator handles the watch's DELETED event.
    wait_for(lambda: not _pods(cluster, namespace), what="pod removed")

    def closed() -> tuple[Any, ...] | None:
        with psycopg.connect(operator.dsn) as conn:
            row = conn.execute(
                "SELECT phase, reason, deleted_at IS NOT NULL FROM drover_runs WHERE id = %s",
                (uid,),
            ).fetchone()
        return tuple(row) if row is not None and row[0] != "Running" else None

    assert wait_for(closed, what="the run's record closed") == ("Canceled", "Deleted", True)
    with psycopg.connect(operator.dsn) as conn:
        active = conn.execute(
            "SELECT count(*) FROM drover_attempts WHERE run_id = %s AND active", (uid,)
        ).fetchone()
    assert active == (0,)


def test_a_taskrun_deleted_while_no_operator_runs_frees_its_slot_once_one_is_back(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    """Without a finalizer a deletion can go unseen: the operator compares its unfinished
    records with the TaskRuns at startup, closes the missing one's record and admits the
    run that waited for its slot."""
    c = cluster.client
    task(
        c,
        namespace,
        "single",
        {"image": "busybox", "command": ["sleep", "600"], "concurrency": {"limit": 1}},
    )
    uid = run(c, namespace, "holder", "single")
    wait_phase(c, namespace, "holder", "Running")
    run(c, namespace, "waiter", "single")
    wait_for(
        lambda: status(c, namespace, "waiter").get("phase") == "Queued",
        what="the second run queued behind the limit",
    )
    operator.kill()
    c.delete(TaskRunResource, "holder", namespace=namespace)

    def gone() -> bool:
        try:
            get_run(c, namespace, "holder")
        except ApiError as exc:
            return exc.status.code == 404
        return False

    wait_for(gone, what="the TaskRun deleted with no operator running")
    operator.start()
    wait_phase(c, namespace, "waiter", "Running")
    with psycopg.connect(operator.dsn) as conn:
        row = conn.execute(
            "SELECT phase, reason, deleted_at IS NOT NULL FROM drover_runs WHERE id = %s", (uid,)
        ).fetchone()
    assert row == ("Canceled", "Deleted", True)


def test_missing_task_is_named_and_nothing_runs(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    run(c, namespace, "early", "not-yet")

    def named() -> dict[str, object] | None:
        conditions = status(c, namespace, "early").get("conditions") or []
        return conditions[0] if conditions and conditions[0]["reason"] == "TaskNotFound" else None

    condition = wait_for(named, what="TaskNotFound condition")
    assert 'Task "not-yet" not found' in str(condition["message"])
    assert _pods(cluster, namespace) == []
    task(c, namespace, "not-yet", {"image": "busybox", "command": ["true"]})
    wait_phase(c, namespace, "early", "Succeeded")


def test_a_200_character_name_gets_a_valid_pod(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(c, namespace, "t", {"image": "busybox", "command": ["true"]})
    name = ("long-" * 40)[:199] + "x"
    assert len(name) == 200
    run(c, namespace, name, "t")
    st = wait_phase(c, namespace, name, "Succeeded")
    pod_name = st["attempts"][0]["podName"]
    assert len(pod_name) <= 63 and pod_name.endswith("-a1")
    [pod] = _pods(cluster, namespace)
    assert pod.metadata is not None and pod.metadata.name == pod_name


def test_pending_timeout_fails_with_the_reason(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "huge",
        {
            "image": "busybox",
            "command": ["true"],
            "resources": {"requests": {"cpu": "500"}},
            "timeouts": {"pending": "2s"},
            "retry": {"maxAttempts": 1},
        },
    )
    task(
        c,
        namespace,
        "needs-secret",
        {
            "image": "busybox",
            "command": ["true"],
            "timeouts": {"pending": "3s"},
            "retry": {"maxAttempts": 1},
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
            ],
        },
    )
    run(c, namespace, "huge-1", "huge")
    run(c, namespace, "secret-1", "needs-secret")
    huge = wait_phase(c, namespace, "huge-1", "Failed")
    assert huge["attempts"][0]["reason"] == "Unschedulable"
    assert "Insufficient cpu" in huge["error"]["message"]
    secret = wait_phase(c, namespace, "secret-1", "Failed")
    assert secret["attempts"][0]["reason"] == "CreateContainerConfigError"
    assert 'secret "absent" not found' in secret["error"]["message"]
    wait_for(lambda: not _pods(cluster, namespace), what="pending pods removed")


def test_delay_ttl_and_priority(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "serial",
        {"image": "busybox", "command": ["sleep", "1"], "concurrency": {"limit": 1}},
    )
    run(c, namespace, "blocker", "serial")
    wait_phase(c, namespace, "blocker", "Running")
    run(c, namespace, "low", "serial", priority=-5)
    run(c, namespace, "high", "serial", priority=5)
    run(c, namespace, "impatient", "serial", ttl="1s")
    run(c, namespace, "later", "serial", delay="4s")
    results = {
        n: wait_phase(c, namespace, n, "Succeeded", "Expired")
        for n in ("low", "high", "impatient", "later")
    }
    assert results["impatient"]["phase"] == "Expired"
    start = {n: parse_time(results[n]["startTime"]) for n in ("low", "high", "later")}
    assert start["high"] < start["low"]
    created = get_run(c, namespace, "later").metadata.creationTimestamp  # type: ignore[union-attr]
    assert created is not None
    assert (start["later"] - created).total_seconds() >= 4


def test_invalid_payload_fails_without_running(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "typed",
        {
            "image": "busybox",
            "command": ["true"],
            "payloadSchema": {
                "type": "object",
                "required": ["customer"],
                "properties": {"customer": {"type": "integer"}},
            },
        },
    )
    wait_for(lambda: c.get(TaskResource, "typed", namespace=namespace).status, what="Task status")
    run(c, namespace, "ok", "typed", payload={"customer": 42})
    run(c, namespace, "wrong", "typed", payload={"customer": "forty-two"})
    assert wait_phase(c, namespace, "ok", "Succeeded")["phase"] == "Succeeded"
    wrong = wait_phase(c, namespace, "wrong", "Failed")
    assert wrong["error"]["type"] == "InvalidPayload"
    assert "payload.customer" in wrong["error"]["message"]
    assert wrong["attempt"] == 0


def test_a_nul_character_fails_the_run_naming_the_field(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    """Kubernetes stores a NUL character (`\\u0000`) in a TaskRun's payload; Postgres cannot.
    Such a run was retried for ever and never said why: it now fails at once, naming the
    field. In `spec.concurrencyKey` the API server refuses it at create."""
    c = cluster.client
    task(c, namespace, "plain", {"image": "busybox", "command": ["true"]})
    with pytest.raises(ApiError) as refused:
        run(c, namespace, "in-key", "plain", concurrencyKey="tenant\x00")
    assert refused.value.status.code == 422, refused.value.status
    assert "spec.concurrencyKey" in str(refused.value.status.message)
    run(c, namespace, "in-payload", "plain", payload={"note": "a\x00b"})
    failed = wait_phase(c, namespace, "in-payload", "Failed")
    assert failed["error"]["type"] == "InvalidPayload", failed
    assert "spec.payload" in failed["error"]["message"] and "NUL" in failed["error"]["message"]
    assert failed["attempt"] == 0
    # The run was recorded (no pod) and the operator carries on.
    run(c, namespace, "after", "plain")
    assert wait_phase(c, namespace, "after", "Succeeded")["phase"] == "Succeeded"
    assert not [p for p in c.list(Pod, namespace=namespace)
                if p.metadata and (p.metadata.name or "").startswith("in-")]  # fmt: skip


def test_the_examples_run(cluster: E2ECluster, namespace: str, operator: OperatorProcess) -> None:
    """What `make dev` shows: the example Tasks and runs, processed by the operator; the SDK
    example imports `examples/tasks.py` through `python -m drover.runner`."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "examples"))
    c = cluster.client
    sdk = wait_phase(c, namespace, "sync-customer-tenant-42", "Succeeded", "Failed")
    assert sdk["phase"] == "Succeeded", sdk
    command = wait_phase(c, namespace, "resize-images-manual", "Succeeded", "Failed")
    assert command["phase"] == "Succeeded", command
    later = status(c, namespace, "sync-customer-tenant-7-later")
    assert later.get("phase") == "Queued"  # delay: 10m
