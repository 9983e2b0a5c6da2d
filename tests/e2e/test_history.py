"""History cleanup: finished TaskRuns beyond keepSucceeded/keepFailed or past
ttlAfterFinished are deleted from the cluster while their records stay in Postgres; pods of
finished runs are removed after DROVER_POD_RETENTION; records of deleted TaskRuns are purged
after DROVER_HISTORY_RETENTION."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
from lightkube.resources.core_v1 import Pod

from drover_operator import settings as operator_settings
from drover_operator.converge import Converger
from drover_operator.engine.history import HistoryCleaner
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.kube import TaskResource, TaskRunResource
from drover_operator.store import Store
from drover_operator.store.db import open_pool
from drover_operator.store.migrate import migrate
from tests.conftest import E2ECluster, wait_for
from tests.e2e.operator_support import OperatorProcess, run, task, wait_all

pytestmark = pytest.mark.e2e


@pytest.fixture
def quick_cleanup(
    cluster: E2ECluster,
    namespace: str,
    database: str,
    drover_crds: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OperatorProcess]:
    """An operator that removes pods of finished runs one second after they finish."""
    monkeypatch.setenv("DROVER_POD_RETENTION", "1s")
    log = cluster.local.directory / "logs" / f"operator-{namespace}.log"
    process = OperatorProcess(cluster, namespace, database, log).start()
    yield process
    process.stop()
    print(f"--- operator log ({log}) ---\n{process.log_tail()}")


def _taskruns(cluster: E2ECluster, namespace: str) -> set[str]:
    items = cluster.client.list(TaskRunResource, namespace=namespace)
    return {i.metadata.name for i in items if i.metadata and i.metadata.name}


def _records(dsn: str, task_name: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        try:
            rows = cur.execute(
                "SELECT name, phase, finished_at, deleted_at FROM drover_runs WHERE task = %s",
                (task_name,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # the operator has not migrated yet
            return {}
    return {row["name"]: row for row in rows}


def test_history_limits_delete_taskruns_and_keep_their_records(
    cluster: E2ECluster, namespace: str, quick_cleanup: OperatorProcess
) -> None:
    c = cluster.client
    fail_by_name = 'case "$DROVER_RUN_NAME" in fail-*) exit 1;; esac'
    task(
        c,
        namespace,
        "kept",
        {
            "image": "busybox",
            "command": ["sh", "-c", fail_by_name],
            "retry": {"maxAttempts": 1},
            "history": {"keepSucceeded": 2, "keepFailed": 1},
        },
    )
    task(
        c,
        namespace,
        "brief",
        {"image": "busybox", "command": ["true"], "history": {"ttlAfterFinished": "0s"}},
    )
    names = [f"ok-{i}" for i in range(4)] + [f"fail-{i}" for i in range(3)]
    for name in names:
        run(c, namespace, name, "kept")
    run(c, namespace, "gone-soon", "brief")

    def all_finished() -> dict[str, dict[str, Any]] | None:
        records = _records(quick_cleanup.dsn, "kept")
        done = len(records) == len(names) and all(r["finished_at"] for r in records.values())
        return records if done else None

    records = wait_for(all_finished, timeout=180, what="all runs finished")
    assert {n: r["phase"] for n, r in records.items()} == {
        **{n: "Succeeded" for n in names if n.startswith("ok")},
        **{n: "Failed" for n in names if n.startswith("fail")},
    }
    newest_first = sorted(records.values(), key=lambda r: r["finished_at"], reverse=True)
    succeeded = [r["name"] for r in newest_first if r["phase"] == "Succeeded"]
    failed = [r["name"] for r in newest_first if r["phase"] == "Failed"]
    keep = set(succeeded[:2] + failed[:1])
    wait_for(
        lambda: _taskruns(cluster, namespace) == keep,
        timeout=120,
        what=f"only {sorted(keep)} left",
    )

    # Every record stays in Postgres; those of deleted TaskRuns are marked so (when the
    # watch brings their deletion, a moment after the listing stops showing them).
    def unmarked() -> set[str] | None:
        records = _records(quick_cleanup.dsn, "kept")
        assert set(records) == set(names)
        left = {n for n, r in records.items() if r["deleted_at"] is None}
        return left if left == keep else None

    wait_for(unmarked, what=f"only {sorted(keep)} without deleted_at")
    # ttlAfterFinished 0s: gone from the cluster as soon as it finished, kept in Postgres.
    wait_for(lambda: "gone-soon" not in _taskruns(cluster, namespace), what="gone-soon deleted")
    [brief] = _records(quick_cleanup.dsn, "brief").values()
    assert brief["phase"] == "Succeeded" and brief["deleted_at"] is not None
    # Pods of finished runs go after DROVER_POD_RETENTION, also those of kept TaskRuns.
    wait_for(lambda: not list(c.list(Pod, namespace=namespace)), what="pods removed")
    assert _taskruns(cluster, namespace) == keep

    def all_marked_removed() -> bool:
        with psycopg.connect(quick_cleanup.dsn) as conn:
            left = conn.execute(
                "SELECT count(*) FROM drover_attempts WHERE pod_created AND NOT pod_removed"
            ).fetchone()
        return left == (0,)

    # Pods that went with their TaskRun are marked once the cleanup has looked for them.
    wait_for(all_marked_removed, what="every attempt's pod marked removed")
    statuses = wait_all(c, namespace, sorted(keep), "Succeeded", "Failed")
    assert all(st["attempts"][0]["podName"] for st in statuses.values())


def test_records_of_deleted_taskruns_are_purged_after_the_retention(
    cluster: E2ECluster, database: str
) -> None:
    """Against Postgres alone: what the purge removes, and what it must keep."""

    async def scenario() -> dict[str, bool]:
        await migrate(database)
        pool = await open_pool(database, 2)
        try:
            store = Store(pool)
            settings = operator_settings.load(
                {"DROVER_DATABASE_URL": database, "DROVER_HISTORY_RETENTION": "1h"}
            )
            # The purge needs neither Kubernetes nor run decisions.
            cleaner = HistoryCleaner(
                settings, store, cast(RunLifecycle, None), cast(Converger, None)
            )
            now = dt.datetime.now(dt.UTC)
            cases = {
                "old-deleted": (now - dt.timedelta(hours=2), True),
                "old-still-in-cluster": (now - dt.timedelta(hours=2), False),
                "recent-deleted": (now - dt.timedelta(minutes=10), True),
            }
            ids = {}
            async with pool.connection() as conn:
                for name, (finished, deleted) in cases.items():
                    ids[name] = uuid.uuid4()
                    await conn.execute(
                        "INSERT INTO drover_runs (id, namespace, name, task, phase, created_at,"
                        " finished_at, deleted_at) VALUES (%s, 'ns', %s, 't', 'Succeeded',"
                        " %s, %s, %s)",
                        (ids[name], name, finished, finished, finished if deleted else None),
                    )
                    await conn.execute(
                        "INSERT INTO drover_run_events (run_id, type, reason, message)"
                        " VALUES (%s, 'Normal', 'Succeeded', '')",
                        (ids[name],),
                    )
            await cleaner.purge()
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT name FROM drover_runs")
                left = {row["name"] for row in await cursor.fetchall()}
                cursor = await conn.execute("SELECT count(*) AS n FROM drover_run_events")
                events = (await cursor.fetchone() or {"n": -1})["n"]
            assert events == 2  # the purged run's history went with it
            return {name: name in left for name in cases}
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == {
        "old-deleted": False,
        "old-still-in-cluster": True,  # its TaskRun exists: the record must stay
        "recent-deleted": True,
    }


def test_deleting_a_task_deletes_its_scheduled_runs_not_their_records(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    """Scheduled runs are owned by their Task, as a CronJob's Jobs: garbage-collected with
    it; their records stay, marked deleted."""
    c = cluster.client
    schedule = {"cron": "* * * * * *"}
    task(c, namespace, "owner", {"image": "busybox", "command": ["true"], "schedule": schedule})

    def recorded() -> set[str] | None:
        names = {n for n in _taskruns(cluster, namespace) if n.startswith("owner-")}
        return names if names and names <= set(_records(operator.dsn, "owner")) else None

    names = wait_for(recorded, what="scheduled runs, recorded")
    c.delete(TaskResource, "owner", namespace=namespace)

    def collected() -> bool:
        return not {n for n in _taskruns(cluster, namespace) if n.startswith("owner-")}

    wait_for(collected, timeout=120, what="scheduled runs garbage-collected with their Task")

    def marked() -> dict[str, dict[str, Any]] | None:
        # The watch's DELETED events mark them (no finalizer holds the TaskRuns back).
        records = _records(operator.dsn, "owner")
        return records if all(r["deleted_at"] is not None for r in records.values()) else None

    records = wait_for(marked, what="the records marked deleted")
    assert names <= set(records)
