"""History: which finished TaskRuns and pods are due for removal from the cluster, and
purging the records of deleted TaskRuns after the retention period."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from drover_operator.domain.records import RunRef
from drover_operator.store.db import Pool, fetch_all

TASKS_WITH_HISTORY = """
SELECT namespace, name, spec -> 'history' AS history FROM drover_tasks WHERE spec ? 'history'
"""

# Finished runs of one Task whose TaskRun exists, beyond keepSucceeded/keepFailed (newest
# kept) or older than ttlAfterFinished. A NULL limit selects nothing.
RUNS_BEYOND_HISTORY = """
SELECT id, namespace, name FROM (
    SELECT id, name, namespace, phase, finished_at,
           row_number() OVER (PARTITION BY phase = 'Succeeded'
                              ORDER BY finished_at DESC, id) AS newer
    FROM drover_runs
    WHERE namespace = %(namespace)s AND task = %(task)s
      AND deleted_at IS NULL AND finished_at IS NOT NULL
) AS finished
WHERE (phase = 'Succeeded' AND newer > %(keep_succeeded)s)
   OR (phase <> 'Succeeded' AND newer > %(keep_failed)s)
   OR finished_at <= now() - %(ttl)s::interval
LIMIT %(limit)s
"""

# The runs as an array of ids, found by primary key (a join was planned as a sequential scan
# of every run, finished or not).
RUNS_WITH_PODS_LEFT = """
SELECT r.id, r.namespace, r.name FROM drover_runs r
WHERE r.id = ANY(ARRAY(
    SELECT a.run_id FROM drover_attempts a
    WHERE a.pod_created AND NOT a.pod_removed AND NOT a.active))
  AND r.finished_at <= now() - %s::interval
LIMIT %s
"""

PODS_REMOVED = "UPDATE drover_attempts SET pod_removed = true WHERE run_id = %s AND NOT active"

# Records outlive their TaskRuns, never the other way round: only runs whose TaskRun is gone.
PURGE_RUNS = """
DELETE FROM drover_runs WHERE id IN (
    SELECT id FROM drover_runs
    WHERE deleted_at IS NOT NULL AND finished_at < now() - %s::interval
    LIMIT %s)
"""

PURGE_SCHEDULE_RUNS = """
DELETE FROM drover_schedule_runs s
WHERE s.scheduled_at < now() - %s::interval
  AND (s.done OR NOT EXISTS (SELECT 1 FROM drover_runs r WHERE r.id = s.run_uid))
"""

PURGE_TASK_EVENTS = """
DELETE FROM drover_task_events WHERE posted AND at < now() - %s::interval
"""


@dataclass(frozen=True)
class TaskHistory:
    """A Task's `history` spec, as written (validated by the caller)."""

    namespace: str
    name: str
    history: dict[str, Any]


class HistoryStore:
    """What history rules select, and the purge of old records."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def tasks_with_history(self) -> list[TaskHistory]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, TaskHistory, TASKS_WITH_HISTORY)

    async def runs_beyond(
        self,
        namespace: str,
        task: str,
        *,
        keep_succeeded: int | None,
        keep_failed: int | None,
        ttl: dt.timedelta | None,
        limit: int,
    ) -> list[RunRef]:
        """Finished runs whose TaskRun exists but which the Task's history rules drop."""
        params = {
            "namespace": namespace,
            "task": task,
            "keep_succeeded": keep_succeeded,
            "keep_failed": keep_failed,
            "ttl": ttl,
            "limit": limit,
        }
        async with self.pool.connection() as conn:
            return await fetch_all(conn, RunRef, RUNS_BEYOND_HISTORY, params)

    async def runs_with_pods_left(self, retention: dt.timedelta, limit: int) -> list[RunRef]:
        """Runs finished more than `retention` ago whose pods were not removed yet."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, RunRef, RUNS_WITH_PODS_LEFT, (retention, limit))

    async def pods_removed(self, run_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(PODS_REMOVED, (run_id,))

    async def purge(self, retention: dt.timedelta, limit: int) -> None:
        """Records of runs whose TaskRun is gone, finished more than `retention` ago."""
        async with self.pool.connection() as conn:
            await conn.execute(PURGE_RUNS, (retention, limit))
            await conn.execute(PURGE_SCHEDULE_RUNS, (retention,))
            await conn.execute(PURGE_TASK_EVENTS, (retention,))
