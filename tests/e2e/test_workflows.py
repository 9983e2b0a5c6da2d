"""Workflows end to end: child runs, durable waits whose pods exit and free their slot, and
waitpoint tokens. Pods are judged by the test's own watch (`podwatch`), what ran by the
ledger the task code writes (`workflow_tasks`), and runs by listing TaskRuns."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from lightkube.types import PatchType

from drover.protocol.names import GROUP, LABEL_PARENT_RUN, LABEL_RUN
from drover_operator.kube import TaskRunResource
from tests.conftest import E2ECluster, wait_for
from tests.e2e.api_support import call, taskruns
from tests.e2e.identities import rule, service_account
from tests.e2e.operator_support import OperatorProcess, run, status, task, wait_phase
from tests.e2e.podwatch import PodWatch, watching

pytestmark = pytest.mark.e2e

TASKS = "tests.e2e.workflow_tasks"


def sdk_task(cluster: E2ECluster, namespace: str, name: str, function: str, **spec: Any) -> None:
    task(
        cluster.client,
        namespace,
        name,
        {
            "image": "busybox",
            "entrypoint": f"{TASKS}:{function}",
            "timeouts": {"heartbeat": "5s"},
            "retry": {"maxAttempts": 3, "minDelay": "1s", "randomize": False},
            **spec,
        },
    )


def ledger(directory: Path) -> list[dict[str, Any]]:
    path = directory / "ledger"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def peak_overlap(entries: list[dict[str, Any]]) -> int:
    """The most children running their code at once, from the ledger's start/end lines."""
    edges = [
        (e["at"], 1 if e["event"] == "start" else -1)
        for e in entries
        if e["event"] in ("start", "end")
    ]
    current = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak


def pods_of(watch: PodWatch, run_name: str) -> list[Any]:
    return sorted(watch.matching(**{LABEL_RUN: run_name}), key=lambda p: p.seen_at)


def test_fan_out_of_20_children_under_limit_3_with_the_parent_holding_no_pod(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "square", "square", concurrency={"limit": 3})
    sdk_task(cluster, namespace, "fan-out", "fan_out", concurrency={"limit": 1})
    gate = tmp_path / "gate"
    with watching(cluster, namespace) as watch:
        payload = {"dir": str(tmp_path), "n": 20, "gate": str(gate)}
        run(c, namespace, "fan", "fan-out", payload=payload)
        waiting = wait_phase(c, namespace, "fan", "Waiting", "Failed", "Succeeded")
        assert waiting["phase"] == "Waiting", waiting
        # The children run their code only once the parent's pod is seen gone.
        wait_for(lambda: not watch.live(**{LABEL_RUN: "fan"}), what="the parent's pod gone")
        gate.touch()
        assert waiting["waitingFor"]["kind"] == "Runs"
        assert len(waiting["waitingFor"]["runs"]) == 20
        condition = waiting["conditions"][0]
        assert condition["reason"] == "WaitingForRuns" and "20 run(s)" in condition["message"]
        st = wait_phase(c, namespace, "fan", "Succeeded", "Failed", timeout=300)
    assert st["phase"] == "Succeeded", st
    assert st["output"] == [x * x for x in range(20)]
    # Suspending is not a retry: one attempt, in two pods.
    assert st["attempt"] == 1
    assert [(a["number"], a["execution"]) for a in st["attempts"]] == [(1, 1), (1, 2)]
    assert st["attempts"][0]["reason"] == "Suspended"

    entries = ledger(tmp_path)
    children = [e for e in entries if e["event"] == "start"]
    assert sorted(e["x"] for e in children) == list(range(20))  # each child ran once
    assert 1 <= peak_overlap(entries) <= 3
    # The parent had no pod from its suspension until every child was done.
    first, second = pods_of(watch, "fan")
    assert first.ended_at is not None
    assert first.ended_at <= min(e["at"] for e in children)
    assert second.seen_at >= max(e["at"] for e in entries if e["event"] == "end")

    runs = taskruns(c, namespace)
    kids = {n: r for n, r in runs.items() if r["labels"].get(LABEL_PARENT_RUN) == "fan"}
    assert len(kids) == 20
    assert sorted(st["children"]) == sorted(kids)
    for name, kid in kids.items():
        assert kid["status"]["parent"] == "fan", name
        meta = c.get(TaskRunResource, name, namespace=namespace).metadata
        assert meta is not None and meta.ownerReferences
        owner = meta.ownerReferences[0]
        assert (owner.kind, owner.name, owner.uid) == ("TaskRun", "fan", runs["fan"]["uid"])


def test_async_forms_and_a_short_wait_in_the_pod(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "square", "square", concurrency={"limit": 2})
    sdk_task(cluster, namespace, "async-fan", "fan_out_async")
    run(c, namespace, "afan", "async-fan", payload={"dir": str(tmp_path), "n": 3})
    st = wait_phase(c, namespace, "afan", "Succeeded", "Failed", timeout=300)
    assert st["phase"] == "Succeeded", st
    assert st["output"] == {"squares": [0, 1, 4], "one": 100}
    # The 0.5 s wait slept in the pod; the two child waits suspended it twice.
    assert [a["reason"] for a in st["attempts"]] == ["Suspended", "Suspended", "Completed"]


def test_same_task_recursion_under_limit_1_completes(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "recurse", "recurse", concurrency={"limit": 1})
    run(c, namespace, "deep", "recurse", payload={"dir": str(tmp_path), "depth": 3})
    st = wait_phase(c, namespace, "deep", "Succeeded", "Failed", timeout=300)
    assert st["phase"] == "Succeeded", st
    assert st["output"] == 3
    depths = [e["depth"] for e in ledger(tmp_path) if e["event"] == "recurse"]
    # Each level ran its code twice (before and after its wait), depth 0 once.
    assert sorted(depths) == [0, 1, 1, 2, 2, 3, 3]


def test_sigkill_just_after_a_trigger_finds_the_same_child(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "square", "square")
    sdk_task(cluster, namespace, "dies", "trigger_then_die")
    run(c, namespace, "dies-1", "dies", payload={"dir": str(tmp_path)})
    st = wait_phase(c, namespace, "dies-1", "Succeeded", "Failed", timeout=300)
    assert st["phase"] == "Succeeded", st
    assert st["attempt"] == 2 and st["attempts"][0]["exitCode"] == 137
    triggered = [e for e in ledger(tmp_path) if e["event"] == "triggered"]
    assert [e["attempt"] for e in triggered] == [1, 2]
    assert triggered[0]["id"] == triggered[1]["id"]
    children = [
        n
        for n, r in taskruns(c, namespace).items()
        if r["labels"].get(LABEL_PARENT_RUN) == "dies-1"
    ]
    assert children == [st["output"]]
    wait_phase(c, namespace, st["output"], "Succeeded")
    assert len([e for e in ledger(tmp_path) if e["event"] == "start"]) == 1


def test_wait_for_20s_suspends_and_survives_the_operator_being_down_at_the_wake_time(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "sleeper", "sleeper")
    with watching(cluster, namespace) as watch:
        run(c, namespace, "nap", "sleeper", payload={"dir": str(tmp_path), "seconds": "20s"})
        waiting = wait_phase(c, namespace, "nap", "Waiting", "Failed", "Succeeded")
        assert waiting["phase"] == "Waiting", waiting
        wake = dt.datetime.fromisoformat(waiting["waitingFor"]["until"]).timestamp()
        wait_for(lambda: not watch.live(**{LABEL_RUN: "nap"}), what="the waiting run's pod gone")
        operator.kill()
        # Down across the wake time: the wake-up lives in Postgres.
        wait_for(lambda: time.time() > wake + 2, timeout=60, interval=0.5, what="the wake time")
        assert not watch.live(**{LABEL_RUN: "nap"})
        operator.start()
        st = wait_phase(c, namespace, "nap", "Succeeded", "Failed", timeout=120)
    assert st["phase"] == "Succeeded", st
    assert st["output"]["resumed"] - st["output"]["began"] >= 20
    first, second = pods_of(watch, "nap")
    assert first.ended_at is not None and first.ended_at < wake <= second.seen_at


def test_tokens_complete_through_the_url_and_the_api_once_and_time_out(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "approval", "approval")
    approver = service_account(
        cluster, namespace, "approver", [rule(GROUP, ["waitpoints"], ["get", "list", "update"])]
    )
    stranger = service_account(cluster, namespace, "stranger", [rule(GROUP, ["taskruns"], ["get"])])

    def token_of(run_name: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            tokens = [e for e in ledger(tmp_path) if e["event"] == "token" and e["run"] == run_name]
            return tokens[-1] if tokens else None

        return wait_for(found, what=f"{run_name}'s token")

    # Through the URL: the secret in it is the only credential.
    run(c, namespace, "by-url", "approval", payload={"dir": str(tmp_path)})
    by_url = token_of("by-url")
    wait_phase(c, namespace, "by-url", "Waiting")
    base = by_url["url"].split("/v1/tokens/")[0]
    wrong = by_url["url"].rsplit("/", 1)[0] + "/not-the-secret"
    assert call(wrong, "POST", "", body={"approved": True})[0] == 404
    status_code, body = call(by_url["url"], "POST", "", body={"approved": True, "by": "slack"})
    assert (status_code, body["state"], body["completedNow"]) == (200, "completed", True)
    again_code, again = call(by_url["url"], "POST", "", body={"approved": False})
    assert (again_code, again["completedNow"]) == (200, False)
    st = wait_phase(c, namespace, "by-url", "Succeeded", "Failed")
    assert st["output"] == {
        "ok": True,
        "data": {"approved": True, "by": "slack"},
        "timedOut": False,
    }

    # Through the API, as a Kubernetes identity with RBAC on waitpoints.
    run(c, namespace, "by-api", "approval", payload={"dir": str(tmp_path)})
    by_api = token_of("by-api")
    wait_phase(c, namespace, "by-api", "Waiting")
    waitpoints = f"/v1/namespaces/{namespace}/waitpoints"
    listed_code, listed = call(base, "GET", f"{waitpoints}?state=waiting", approver)
    assert listed_code == 200 and [t["id"] for t in listed["items"]] == [by_api["id"]]
    assert listed["items"][0]["run"] == "by-api" and listed["items"][0]["tags"] == ["approval"]
    complete = f"{waitpoints}/{by_api['id']}/complete"
    refused_code, refused = call(base, "POST", complete, stranger, {"data": 1})
    assert refused_code == 403 and "update waitpoints.drover.dev" in refused["message"]
    assert call(base, "POST", complete, None, {"data": 1})[0] == 401
    unknown = f"{waitpoints}/{uuid.uuid4()}/complete"
    assert call(base, "POST", unknown, approver, {"data": 1})[0] == 404
    too_big = {"data": "x" * (256 * 1024 + 1)}
    assert call(base, "POST", complete, approver, too_big)[0] == 413
    done_code, done = call(base, "POST", complete, approver, {"data": {"approved": "yes"}})
    assert (done_code, done["completedNow"]) == (200, True)
    twice_code, twice = call(base, "POST", complete, approver, {"data": {"approved": "no"}})
    assert (twice_code, twice["completedNow"], twice["data"]) == (200, False, {"approved": "yes"})
    st = wait_phase(c, namespace, "by-api", "Succeeded", "Failed")
    assert st["output"]["data"] == {"approved": "yes"}

    # Nobody completes it: it times out, and the run resumes with `timed_out`.
    run(c, namespace, "ignored", "approval", payload={"dir": str(tmp_path), "timeout": "3s"})
    st = wait_phase(c, namespace, "ignored", "Succeeded", "Failed", timeout=120)
    # (`status.output` is merge-patched, so its nulls are dropped: `data` is absent.)
    assert st["output"] == {"ok": False, "timedOut": True}
    late = token_of("ignored")
    assert call(late["url"], "POST", "", body={"late": True})[1]["state"] == "timed_out"


def test_canceling_a_waiting_parent_cancels_its_unfinished_children(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "napper", "napper")
    sdk_task(cluster, namespace, "parent", "waits_on_nappers")
    with watching(cluster, namespace) as watch:
        run(c, namespace, "p", "parent", payload={"dir": str(tmp_path), "sleeps": [0.1, 600]})
        waiting = wait_phase(c, namespace, "p", "Waiting")
        quick, slow = waiting["waitingFor"]["runs"]
        wait_phase(c, namespace, quick, "Succeeded")
        wait_for(
            lambda: any(e["event"] == "start" and e["x"] == 1 for e in ledger(tmp_path)),
            what="the slow child running",
        )
        c.patch(
            TaskRunResource,
            "p",
            {"spec": {"cancel": True}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        assert wait_phase(c, namespace, "p", "Canceled")["phase"] == "Canceled"
        child = wait_phase(c, namespace, slow, "Canceled")
        assert child["conditions"][0]["reason"] == "ParentCanceled"
        assert status(c, namespace, quick)["phase"] == "Succeeded"
        wait_for(lambda: not watch.live(**{LABEL_RUN: slow}), what="the slow child's pod stopped")
    assert not any(e["event"] == "end" and e["x"] == 1 for e in ledger(tmp_path))


def test_a_failing_child_gives_its_parent_its_error(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "fails", "fails")
    sdk_task(cluster, namespace, "parent", "awaits_a_failure")
    run(c, namespace, "p", "parent", payload={})
    st = wait_phase(c, namespace, "p", "Succeeded", "Failed", timeout=120)
    assert st["phase"] == "Succeeded", st
    output = st["output"]
    assert output["ok"] is False and output["phase"] == "Failed"
    assert output["error"]["type"] == "AbortRun"
    assert output["error"]["message"] == "customer 42 does not exist"
    assert "customer 42 does not exist" in output["raised"]


def test_a_child_payload_its_schema_refuses_raises_in_the_parent_naming_the_field(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}}
    task(c, namespace, "typed", {"image": "busybox", "command": ["true"], "payloadSchema": schema})
    sdk_task(cluster, namespace, "parent", "bad_child_payload")
    run(c, namespace, "p", "parent", payload={})
    st = wait_phase(c, namespace, "p", "Succeeded", "Failed")
    assert st["output"]["status"] == 422 and "count" in st["output"]["refused"]
    assert [n for n in taskruns(c, namespace) if n != "p"] == []  # nothing was created
