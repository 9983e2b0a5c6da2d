"""`concurrency.slotRelease`: with `PodGone` a canceled run's slot is held until its pod is
gone, so pods never outnumber the limit; with the default `Completion` the next run starts
while the old pod is still stopping. Judged by the test's own pod watch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lightkube.models.core_v1 import ResourceQuotaSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, ResourceQuota
from lightkube.types import PatchType

from drover.protocol.names import LABEL_RUN, LABEL_TASK
from drover_operator.kube import TaskRunResource
from tests.conftest import E2ECluster, wait_for
from tests.e2e.operator_support import OperatorProcess, run, status, task, wait_phase
from tests.e2e.podwatch import watching

pytestmark = pytest.mark.e2e


def _lingering(release: Path) -> list[str]:
    """A command that, asked to stop, keeps its pod alive until the test says `release`."""
    wait = f"while [ ! -e {release} ]; do sleep 0.2; done; exit 0"
    return ["sh", "-c", f"trap '{wait}' TERM; while true; do sleep 1; done"]


def _terminating(cluster: E2ECluster, namespace: str, run_name: str) -> bool:
    for pod in cluster.client.list(Pod, namespace=namespace, labels={LABEL_RUN: run_name}):
        if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
            return True
    return False


@pytest.mark.parametrize("release", ["Completion", "PodGone"])
def test_a_canceled_runs_slot_is_free_at_once_or_once_its_pod_is_gone(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path, release: str
) -> None:
    c = cluster.client
    gate = tmp_path / "release"
    task(
        c,
        namespace,
        "licensed",
        {
            "image": "busybox",
            "command": _lingering(gate),
            "concurrency": {"limit": 1, "slotRelease": release},
            "podTemplate": {"spec": {"terminationGracePeriodSeconds": 600}},
        },
    )
    with watching(cluster, namespace) as watch:
        run(c, namespace, "first", "licensed")
        wait_phase(c, namespace, "first", "Running")
        run(c, namespace, "second", "licensed")
        wait_phase(c, namespace, "second", "Queued")
        c.patch(
            TaskRunResource,
            "first",
            {"spec": {"cancel": True}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        wait_phase(c, namespace, "first", "Canceled")
        # The operator asked the pod to stop; it lingers (its TERM trap) until released.
        wait_for(lambda: _terminating(cluster, namespace, "first"), what="first pod stopping")
        if release == "Completion":
            # The slot was freed with the cancel: the next run's pod starts beside it.
            wait_for(lambda: watch.live(**{LABEL_RUN: "second"}), what="the second run's pod")
            assert watch.live(**{LABEL_RUN: "first"})
            gate.touch()
            peak = 2
        else:
            # Held while the first pod lives. A broken hold would admit the second run in
            # the pass that stopped the first pod; a few more seconds give a late one room.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                assert status(c, namespace, "second").get("phase") == "Queued"
                assert not watch.matching(**{LABEL_RUN: "second"})
                time.sleep(0.5)
            gate.touch()
            wait_for(lambda: not watch.live(**{LABEL_RUN: "first"}), what="first pod gone")
            peak = 1
        wait_phase(c, namespace, "second", "Running")
        wait_for(lambda: watch.live(**{LABEL_RUN: "second"}), what="the second run's pod")
    assert watch.peak({LABEL_TASK: "licensed"}) == peak


def test_a_slot_held_for_a_pod_never_created_is_freed_by_the_sweep(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    """No pod, so no pod event: the sweep that reads the pods of ended attempts frees it."""
    c = cluster.client
    # Every pod is refused in this namespace: the attempts time out pending, podless.
    c.create(
        ResourceQuota(
            metadata=ObjectMeta(name="no-pods", namespace=namespace),
            spec=ResourceQuotaSpec(hard={"pods": "0"}),
        )
    )
    task(
        c,
        namespace,
        "refused",
        {
            "image": "busybox",
            "command": ["true"],
            "concurrency": {"limit": 1, "slotRelease": "PodGone"},
            "timeouts": {"pending": "3s"},
            "retry": {"maxAttempts": 1},
        },
    )
    with watching(cluster, namespace) as watch:
        run(c, namespace, "first", "refused")
        run(c, namespace, "second", "refused")
        for name in ("first", "second"):
            st = wait_phase(c, namespace, name, "Failed", "Succeeded")
            assert st["phase"] == "Failed" and st["attempts"][0]["reason"] == "PodMissing"
    assert not watch.matching()  # no pod ever existed
