"""Concurrency limits hold under bursts, across an operator SIGKILL, and with two operators
acting at once; nothing is lost and no attempt is admitted twice."""

from __future__ import annotations

import time

import pytest
from lightkube.resources.core_v1 import Pod

from tests.conftest import E2ECluster, wait_for
from tests.e2e.operator_support import (
    OperatorProcess,
    max_overlap,
    run,
    status,
    task,
    wait_all,
)

pytestmark = pytest.mark.e2e


def _burst(cluster: E2ECluster, namespace: str, count: int, limit: int, sleep: str) -> list[str]:
    task(
        cluster.client,
        namespace,
        "burst",
        {
            "image": "busybox",
            "command": ["sleep", sleep],
            "concurrency": {"limit": limit},
            "retry": {"maxAttempts": 3},
        },
    )
    names = [f"burst-{i:03d}" for i in range(count)]
    for name in names:
        run(cluster.client, namespace, name, "burst")
    return names


def _assert_each_ran_once(cluster: E2ECluster, namespace: str, statuses: dict[str, dict]) -> None:  # type: ignore[type-arg]
    for name, st in statuses.items():
        assert st["phase"] == "Succeeded", name
        assert st["attempt"] == 1 and len(st["attempts"]) == 1, name
    pods = list(cluster.client.list(Pod, namespace=namespace))
    assert len(pods) == len(statuses)  # one pod per run: no attempt was started twice


def test_limit_holds_under_a_burst(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    names = _burst(cluster, namespace, count=30, limit=3, sleep="0.5")
    statuses = wait_all(cluster.client, namespace, names, "Succeeded", "Failed")
    _assert_each_ran_once(cluster, namespace, statuses)
    peak = max_overlap(list(statuses.values()))
    assert 1 <= peak <= 3


def test_sigkill_mid_burst_loses_nothing_and_never_overshoots(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    names = _burst(cluster, namespace, count=20, limit=3, sleep="0.5")

    def some_done() -> bool:
        done = [n for n in names if status(c, namespace, n).get("phase") == "Succeeded"]
        return len(done) >= 4

    wait_for(some_done, timeout=120, what="a few runs finished before the crash")
    operator.kill()
    time.sleep(1)  # pods keep finishing while no operator watches: on purpose
    operator.start()
    statuses = wait_all(c, namespace, names, "Succeeded", "Failed")
    _assert_each_ran_once(cluster, namespace, statuses)
    assert max_overlap(list(statuses.values())) <= 3


def test_two_operators_at_once_never_overshoot(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    # Both standalone, both active: only Postgres' per-Task serialization keeps the limit.
    second = OperatorProcess(
        cluster, namespace, operator.dsn, operator.log.with_name(operator.log.stem + "-second.log")
    ).start()
    try:
        names = _burst(cluster, namespace, count=30, limit=3, sleep="0.5")
        statuses = wait_all(cluster.client, namespace, names, "Succeeded", "Failed")
    finally:
        second.stop()
        print(f"--- second operator's log ---\n{second.log_tail()}")
    _assert_each_ran_once(cluster, namespace, statuses)
    assert max_overlap(list(statuses.values())) <= 3


def test_per_key_limit(cluster: E2ECluster, namespace: str, operator: OperatorProcess) -> None:
    c = cluster.client
    task(
        c,
        namespace,
        "keyed",
        {
            "image": "busybox",
            "command": ["sleep", "0.5"],
            "concurrency": {"limit": 4, "perKeyLimit": 1},
        },
    )
    names = []
    for i in range(8):
        name = f"k{i}"
        run(c, namespace, name, "keyed", concurrencyKey=f"tenant-{i % 2}")
        names.append(name)
    statuses = wait_all(c, namespace, names, "Succeeded", "Failed")
    for key in (0, 1):
        same_key = [statuses[n] for n in names if int(n[1:]) % 2 == key]
        assert max_overlap(same_key) == 1
