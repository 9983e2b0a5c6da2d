"""The generated CRDs on a real API server: bad manifests are refused at `kubectl apply` with
a message naming the field, defaults are filled in, TaskRun specs are immutable except
`cancel`, and the status subresource and printer columns work."""

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
    assert_refused(apply(cluster, ns, case.manifest), case.field, case.message or "")


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


IMMUTABLE_CHANGES = [
    ("task-ref", {"taskRef": {"name": "other"}}, "spec.taskRef.name"),
    ("priority", {"priority": 7}, "spec.priority"),
    ("concurrency-key", {"concurrencyKey": "tenant-2"}, "spec.concurrencyKey"),
    ("concurrency-key-removed", {"concurrencyKey": None}, "spec.concurrencyKey"),
    ("delay", {"delay": "10m"}, "spec.delay"),
    ("delay-to-not-before", {"notBefore": "2030-01-01T00:00:00Z", "delay": None}, "spec.notBefore"),
    ("ttl-added", {"ttl": "1h"}, "spec.ttl"),
    ("tags", {"tags": {"tenant": "tenant-2"}}, "spec.tags"),
]


@pytest.mark.parametrize(
    ("change", "field"),
    [pytest.param(c, f, id=i) for i, c, f in IMMUTABLE_CHANGES],
)
def test_taskrun_spec_is_immutable(
    cluster: E2ECluster, ns: str, change: dict[str, Any], field: str
) -> None:
    name = f"immutable-{secrets.token_hex(3)}"
    original = {
        "concurrencyKey": "tenant-1",
        "delay": "5m",
        "tags": {"tenant": "tenant-1"},
        "payload": {"n": 1},
    }
    assert apply(cluster, ns, run(original, name=name)).returncode == 0
    changed = {k: v for k, v in {**original, **change}.items() if v is not None}
    assert_refused(apply(cluster, ns, run(changed, name=name)), field, "immutable")
    # Nothing changed on the server.
    assert get(cluster, ns, "taskrun", name)["spec"]["taskRef"] == {"name": "noop"}


def test_cancel_can_be_set_but_not_undone(cluster: E2ECluster, ns: str) -> None:
    assert apply(cluster, ns, run(name="cancel-me")).returncode == 0
    proc = apply(cluster, ns, run({"cancel": True}, name="cancel-me"))
    assert proc.returncode == 0, proc.stderr
    assert get(cluster, ns, "taskrun", "cancel-me")["spec"]["cancel"] is True
    assert_refused(apply(cluster, ns, run({"cancel": False}, name="cancel-me")), "spec.cancel")


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
