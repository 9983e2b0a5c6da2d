"""Tasks as the operator last saw them, and what their status counts."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from drover_operator.domain.records import TaskCounts, TaskRecord
from drover_operator.store.db import Pool, advisory_lock, fetch_all, fetch_one, notify, transaction

UPSERT_TASK = """
INSERT INTO drover_tasks (namespace, name, uid, generation, spec, invalid)
VALUES (%(namespace)s, %(name)s, %(uid)s, %(generation)s, %(spec)s, %(invalid)s)
ON CONFLICT (namespace, name) DO UPDATE
SET uid = EXCLUDED.uid, generation = EXCLUDED.generation, spec = EXCLUDED.spec,
    invalid = EXCLUDED.invalid, updated_at = now()
"""

DELETE_TASK = "DELETE FROM drover_tasks WHERE namespace = %s AND name = %s"

GET_TASK = """
SELECT namespace, name, uid, generation, spec, invalid FROM drover_tasks
WHERE namespace = %s AND name = %s
"""

GET_TASK_FOR_UPDATE = GET_TASK + " FOR UPDATE"

# Runs of a task whose readiness changed: their status shows why they wait.
TOUCH_WAITING_RUNS = """
UPDATE drover_runs SET version = version + 1
WHERE namespace = %s AND task = %s AND phase = 'Queued'
"""

TASK_COUNTS = """
SELECT t.namespace, t.name, t.generation, t.invalid, s.problem AS schedule_problem,
       count(r.id) FILTER (WHERE r.phase IN ('Starting', 'Running'))::int AS active,
       count(r.id) FILTER (WHERE r.phase IN ('Queued', 'Retrying'))::int AS queued,
       count(r.id) FILTER (WHERE r.phase = 'Waiting')::int AS waiting,
       t.spec ? 'webhook' AS webhook
FROM drover_tasks t
LEFT JOIN drover_schedules s ON s.namespace = t.namespace AND s.task = t.name
     AND s.task_uid = t.uid
LEFT JOIN drover_runs r ON r.namespace = t.namespace AND r.task = t.name
     AND r.phase IN ('Starting', 'Running', 'Queued', 'Retrying', 'Waiting')
GROUP BY t.namespace, t.name, t.generation, t.invalid, s.problem, t.spec ? 'webhook'
"""


def admission_key(namespace: str, task: str) -> str:
    """The advisory lock serializing everything that changes a Task's waiting runs."""
    return f"drover.admission/{namespace}/{task}"


class TaskStore:
    """The `drover_tasks` table: each Task's spec as last seen, and whether runs can start."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def upsert(
        self,
        namespace: str,
        name: str,
        uid: str,
        generation: int,
        spec: dict[str, Any],
        invalid: str | None,
    ) -> bool:
        """Record a Task's spec; False when nothing changed (its own status updates)."""
        async with transaction(self.pool) as conn:
            # The admission lock first, as admission takes it: both update the Task's waiting
            # runs, and taking locks in one order is what keeps them from deadlocking.
            await advisory_lock(conn, admission_key(namespace, name))
            current = await fetch_one(conn, TaskRecord, GET_TASK_FOR_UPDATE, (namespace, name))
            if current is not None and (current.uid, current.generation, current.invalid) == (
                uid,
                generation,
                invalid,
            ):
                return False
            await conn.execute(
                UPSERT_TASK,
                {
                    "namespace": namespace,
                    "name": name,
                    "uid": uid,
                    "generation": generation,
                    "spec": Jsonb(spec),
                    "invalid": invalid,
                },
            )
            if current is None or current.invalid != invalid:
                # Waiting runs' status says why they wait (TaskNotFound, TaskNotReady).
                await conn.execute(TOUCH_WAITING_RUNS, (namespace, name))
            await notify(conn, f"{namespace}/{name}")
            return True

    async def delete(self, namespace: str, name: str) -> None:
        async with transaction(self.pool) as conn:
            await advisory_lock(conn, admission_key(namespace, name))
            await conn.execute(DELETE_TASK, (namespace, name))
            await conn.execute(TOUCH_WAITING_RUNS, (namespace, name))

    async def get(self, namespace: str, name: str) -> TaskRecord | None:
        async with self.pool.connection() as conn:
            return await fetch_one(conn, TaskRecord, GET_TASK, (namespace, name))

    async def counts(self) -> list[TaskCounts]:
        """Every Task with its active and queued runs (its status)."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, TaskCounts, TASK_COUNTS)
