"""The generated CRDs on a real API server: bad manifests are refused at `kubectl apply` with
a message naming the field, defaults are filled in, TaskRun specs are immutable except
`cancel` (the payload too, by the policy shipped with the CRDs), and the status subresource
and printer columns work."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import E2ECluster
from tests.unit.test_crd_bad_manifests import (
    BAD_MANIFESTS,
    VALID_COMMAND_TASK_SPEC,
    BadManifest,
    run,
    task,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ns(cluster: E2ECluster, drover_crds: None) -> Iterator[str]:
    """One namespace for the whole table: refused objects are never created, so the cases
    cannot interfere, and ~90 namespaces would only slow the suite down."""
    name = f"crd-validation-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def apply(
    cluster: E2ECluster, namespace: str, manifest: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side` (strict field validation, kubectl's default)."""
    return cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip


def get(cluster: E2ECluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def assert_refused(proc: subprocess.CompletedProcess[str], field: str, fragment: str = "") -> None:
    assert proc.returncode != 0, f"expected refusal naming {field}, got: {proc.stdout}"
    # Refused by the API server (not by kubectl itself), naming the field.
    assert "is invalid" in proc.stderr or "Error from server" in proc.stderr, proc.stderr
    assert field in proc.stderr, proc.stderr
    assert fragment in proc.stderr, proc.stderr


def test_valid_manifests_are_accepted(cluster: E2ECluster, ns: str) -> None:
    # The table's manifests are derived from these; they must be fine on their own.
    for manifest in (task(name="ok-sdk"), task(base=VALID_COMMAND_TASK_SPEC), run()):
        proc = apply(cluster, ns, manifest)
        assert proc.returncode == 0, proc.stderr
        kind = manifest["kind"].lower()
        cluster.kubectl("delete", "-n", ns, kind, manifest["metadata"]["name"])


@pytest.mark.parametrize("case", BAD_MANIFESTS, ids=lambda case: str(case.id))
def test_bad_manifest_is_refused(cluster: E2ECluster, ns: str, case: BadManifest) -> None:
    if case.before is None:
        assert_refused(apply(cluster, ns, case.manifest), case.field, case.message or "")
        return
    proc = apply(cluster, ns, case.before)
    assert proc.returncode == 0, proc.stderr
    kind, name = case.before["kind"].lower(), case.before["metadata"]["name"]
    stored = get(cluster, ns, kind, name)["spec"]
    assert_refused(apply(cluster, ns, case.manifest), case.field, case.message or "")
    # Nothing changed on the server.
    assert get(cluster, ns, kind, name)["spec"] == stored


def test_defaults_are_filled_in(cluster: E2ECluster, ns: str) -> None:
    assert (
        apply(cluster, ns, task({"schedule": {"cron": "@hourly"}}, name="defaults")).returncode == 0
    )
    spec = get(cluster, ns, "task", "defaults")["spec"]
    assert spec["retry"] == {
        "maxAttempts": 3,
        "factor": 2,
        "minDelay": "1s",
        "maxDelay": "60s",
        "randomize": True,
    }
    assert spec["timeouts"] == {"heartbeat": "90s"}
    assert spec["schedule"] == {
        "cron": "@hourly",
        "timezone": "UTC",
        "concurrencyPolicy": "Allow",
        "suspend": False,
    }
    assert apply(cluster, ns, run(name="defaults")).returncode == 0
    run_spec = get(cluster, ns, "taskrun", "defaults")["spec"]
    assert run_spec["priority"] == 0
    assert run_spec["cancel"] is False


def test_cancel_can_be_set(cluster: E2ECluster, ns: str) -> None:
    assert apply(cluster, ns, run(name="cancel-me")).returncode == 0
    proc = apply(cluster, ns, run({"cancel": True}, name="cancel-me"))
    assert proc.returncode == 0, proc.stderr
    assert get(cluster, ns, "taskrun", "cancel-me")["spec"]["cancel"] is True


PAYLOAD = {"customer": "cus_1", "lines": [{"sku": "a", "qty": 1}]}


@pytest.mark.parametrize(
    ("patch_type", "patch"),
    [
        ("merge", {"spec": {"payload": {"customer": "cus_2"}}}),
        ("merge", {"spec": {"payload": None}}),
        ("merge", {"spec": {"payload": {"lines": [{"sku": "a", "qty": 2}]}}}),
        ("json", [{"op": "replace", "path": "/spec/payload/customer", "value": "cus_2"}]),
        ("json", [{"op": "add", "path": "/spec/payload/extra", "value": True}]),
        ("json", [{"op": "remove", "path": "/spec/payload"}]),
        ("merge", {"spec": {"cancel": True, "payload": {"customer": "cus_2"}}}),
    ],
    ids=["merge", "merge-null", "merge-deep", "json-replace", "json-add", "json-remove",
         "merge-with-cancel"],
)  # fmt: skip
def test_payload_patches_are_refused(
    cluster: E2ECluster, ns: str, patch_type: str, patch: Any
) -> None:
    name = f"payload-{secrets.token_hex(3)}"
    assert apply(cluster, ns, run({"payload": PAYLOAD}, name=name)).returncode == 0
    proc = cluster.kubectl(
        "patch", "-n", ns, "taskrun", name, f"--type={patch_type}", "-p", json.dumps(patch),
        check=False,
    )  # fmt: skip
    assert_refused(proc, "spec.payload", "immutable")
    spec = get(cluster, ns, "taskrun", name)["spec"]
    assert spec["payload"] == PAYLOAD and spec["cancel"] is False


def test_what_the_operator_patches_is_still_allowed(cluster: E2ECluster, ns: str) -> None:
    """The payload policy looks at updates of TaskRuns: finalizers, labels, `cancel` and the
    status subresource must still go through, the payload kept as it is."""
    name = "operator-patches"
    assert apply(cluster, ns, run({"payload": PAYLOAD}, name=name)).returncode == 0
    for patch in (
        {"metadata": {"finalizers": ["drover.dev/run"], "labels": {"a": "b"}}},
        {"spec": {"cancel": True}},
        {"metadata": {"finalizers": None}},
    ):
        cluster.kubectl("patch", "-n", ns, "taskrun", name, "--type=merge", "-p", json.dumps(patch))
    cluster.kubectl(
        "patch", "-n", ns, "taskrun", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Canceled"}}),
    )  # fmt: skip
    found = get(cluster, ns, "taskrun", name)
    assert found["spec"]["payload"] == PAYLOAD and found["spec"]["cancel"] is True
    assert found["status"]["phase"] == "Canceled"
    # Re-applying the same manifest (as `kubectl apply` in a CI job would) is no change.
    proc = apply(cluster, ns, run({"payload": PAYLOAD, "cancel": True}, name=name))
    assert proc.returncode == 0, proc.stderr


def test_status_subresource_is_validated_and_shown(cluster: E2ECluster, ns: str) -> None:
    assert apply(cluster, ns, run(name="with-status")).returncode == 0
    now = "2030-01-01T00:00:00Z"
    status = {
        "phase": "Running",
        "attempt": 1,
        "startTime": now,
        "attempts": [{"number": 1, "podName": "with-status-1", "startTime": now}],
        "conditions": [
            {
                "type": "Succeeded",
                "status": "Unknown",
                "reason": "Running",
                "message": "attempt 1 is running",
                "lastTransitionTime": now,
            }
        ],
    }
    patch = ["patch", "-n", ns, "taskrun", "with-status", "--subresource=status"]
    cluster.kubectl(*patch, "--type=merge", "-p", json.dumps({"status": status}))
    wide = cluster.kubectl("get", "-n", ns, "dtr", "with-status", "-o", "wide").stdout
    assert wide.split("\n")[0].split()[:4] == ["NAME", "TASK", "PHASE", "ATTEMPT"]
    assert "Running" in wide and "noop" in wide

    bad = cluster.kubectl(
        *patch, "--type=merge", "-p", json.dumps({"status": {"phase": "Bogus"}}), check=False
    )
    assert_refused(bad, "status.phase", "Unsupported value")
    bad = cluster.kubectl(
        *patch, "--type=merge", "-p", json.dumps({"status": {"attempt": -1}}), check=False
    )
    assert_refused(bad, "status.attempt")


def test_names_and_printer_columns(cluster: E2ECluster, ns: str) -> None:
    assert apply(cluster, ns, task(name="columns")).returncode == 0
    header = cluster.kubectl("get", "-n", ns, "dtask").stdout.split("\n")[0].split()
    for column in ("NAME", "ENTRYPOINT", "SCHEDULE", "LIMIT", "ACTIVE", "QUEUED", "READY", "AGE"):
        assert column in header
    listing = cluster.kubectl("get", "-n", ns, "drover", "-o", "name").stdout
    assert "task.drover.dev/columns" in listing
    assert "taskrun.drover.dev/" in listing
    assert cluster.kubectl("get", "-n", ns, "tasks.drover.dev", "columns").returncode == 0
