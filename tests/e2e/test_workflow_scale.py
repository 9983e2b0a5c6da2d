"""Scale of durable waits, end to end: 500 runs suspended on timers hold no pods (the test's
own pod watch) and no slots, and all resume. A module of its own, so it runs beside the
other workflow tests rather than after them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drover_operator.kube import TaskResource
from tests.conftest import E2ECluster, wait_for
from tests.e2e.api_support import taskruns
from tests.e2e.operator_support import OperatorProcess, run
from tests.e2e.podwatch import watching
from tests.e2e.test_workflows import sdk_task

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(1800)  # the default 600 s stops a hung test; this one takes minutes
def test_500_runs_suspended_on_timers_hold_no_pods_or_slots_and_all_resume(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    count = 500
    sdk_task(cluster, namespace, "until", "until", concurrency={"limit": 50})
    wake = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)  # pushed to now below
    names = [f"until-{i:03d}" for i in range(count)]
    with watching(cluster, namespace) as watch:
        for name in names:
            run(c, namespace, name, "until", payload={"until": wake.isoformat()})

        def all_waiting() -> bool:
            phases = [r["status"].get("phase") for r in taskruns(c, namespace).values()]
            return phases.count("Waiting") == count

        wait_for(all_waiting, timeout=1800, interval=2, what=f"{count} runs Waiting")
        wait_for(lambda: not watch.live(), timeout=120, what="every pod gone")
        counts: dict[str, Any] = c.get(TaskResource, "until", namespace=namespace).status  # type: ignore[assignment]
        assert counts["waiting"] == count and counts["active"] == 0
        assert len(watch.matching()) == count  # one pod each so far
        # The clock moves on: the wake time is brought forward in Postgres, as if the 30
        # minutes had passed (the resolver reads it there, like any wake-up).
        with psycopg.connect(operator.dsn, autocommit=True) as conn:
            conn.execute("UPDATE drover_waitpoints SET wake_at = now()")

        def all_done() -> bool:
            phases = [r["status"].get("phase") for r in taskruns(c, namespace).values()]
            return phases.count("Succeeded") == count

        wait_for(all_done, timeout=1800, interval=2, what=f"{count} runs Succeeded")
    assert len(watch.matching()) == 2 * count
