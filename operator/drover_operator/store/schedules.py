"""Schedules: each Task's cursor, the decision at a tick (one transaction per Task under an
advisory lock, so replicas take turns), and the outbox of runs to create or cancel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from psycopg.types.json import Jsonb

from drover.protocol.phases import FINISHED_PHASES
from drover_operator.domain.lifecycle import EventRecord
from drover_operator.domain.records import (
    ScheduledRun,
    ScheduleDue,
    ScheduleRecord,
    ScheduleStatus,
    TaskRecord,
)
from drover_operator.domain.scheduling import ScheduleDecision
from drover_operator.store.db import (
    Pool,
    advisory_lock,
    fetch_all,
    fetch_one,
    fetch_value,
    sql_list,
    transaction,
)
from drover_operator.store.outbox import record_task_events
from drover_operator.store.tasks import GET_TASK

_FINISHED = sql_list(FINISHED_PHASES)

DB_NOW = "SELECT clock_timestamp()"

# Tasks whose schedule needs a decision: new, changed, or a tick is due.
TASKS_TO_SCHEDULE = """
SELECT t.namespace, t.name, t.uid, (s.task_uid IS DISTINCT FROM t.uid) AS fresh
FROM drover_tasks t
LEFT JOIN drover_schedules s ON s.namespace = t.namespace AND s.task = t.name
WHERE t.spec ? 'schedule'
  AND (s.task IS NULL OR s.task_uid <> t.uid OR s.generation <> t.generation
       OR s.next_at <= %s)
"""

GET_SCHEDULE = """
SELECT namespace, task, task_uid, generation, schedule_key, problem, cursor_at, next_at,
       last_schedule_time
FROM drover_schedules WHERE namespace = %s AND task = %s
"""

UPSERT_SCHEDULE = """
INSERT INTO drover_schedules (namespace, task, task_uid, generation, schedule_key, problem,
                              cursor_at, next_at, last_schedule_time)
VALUES (%(namespace)s, %(task)s, %(task_uid)s, %(generation)s, %(schedule_key)s, %(problem)s,
        %(cursor_at)s, %(next_at)s, %(last_schedule_time)s)
ON CONFLICT (namespace, task) DO UPDATE
SET task_uid = EXCLUDED.task_uid, generation = EXCLUDED.generation,
    schedule_key = EXCLUDED.schedule_key, problem = EXCLUDED.problem,
    cursor_at = EXCLUDED.cursor_at, next_at = EXCLUDED.next_at,
    last_schedule_time = EXCLUDED.last_schedule_time, updated_at = now()
"""

# Rows of Tasks that are gone or no longer have a schedule.
DROP_STALE_SCHEDULES = """
DELETE FROM drover_schedules s
WHERE NOT EXISTS (SELECT 1 FROM drover_tasks t
                  WHERE t.namespace = s.namespace AND t.name = s.task AND t.spec ? 'schedule')
RETURNING s.namespace, s.task, NULL::timestamptz AS last_schedule_time,
          NULL::timestamptz AS next_at
"""

NEXT_DUE = """
SELECT extract(epoch FROM min(next_at) - clock_timestamp())::float8
FROM drover_schedules WHERE problem IS NULL
"""

# Scheduled runs that are not finished: created but not yet recorded count as running.
OPEN_SCHEDULED_RUNS = f"""
SELECT s.name FROM drover_schedule_runs s
LEFT JOIN drover_runs r ON r.id = s.run_uid
WHERE s.namespace = %s AND s.task = %s AND NOT s.done
  AND (r.id IS NULL OR r.phase NOT IN ({_FINISHED}))
ORDER BY s.scheduled_at
"""

INSERT_SCHEDULED_RUN = """
INSERT INTO drover_schedule_runs (namespace, name, task, task_uid, scheduled_at, payload)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (namespace, name) DO NOTHING
"""

REQUEST_CANCEL = """
UPDATE drover_schedule_runs SET cancel_pending = true
WHERE namespace = %s AND name = ANY(%s) AND NOT done
"""

SETTLE_FINISHED = f"""
UPDATE drover_schedule_runs s SET done = true, cancel_pending = false
FROM drover_runs r
WHERE r.id = s.run_uid AND NOT s.done AND r.phase IN ({_FINISHED})
"""

# Not created yet, and the Task is gone: never created (it would be garbage-collected).
SETTLE_ORPHANED = """
UPDATE drover_schedule_runs s SET done = true, cancel_pending = false
WHERE NOT s.done AND s.run_uid IS NULL
  AND NOT EXISTS (SELECT 1 FROM drover_tasks t
                  WHERE t.namespace = s.namespace AND t.name = s.task AND t.uid = s.task_uid)
"""

_SCHEDULED_RUN = "namespace, name, task, task_uid, scheduled_at, payload, run_uid"

# Created a while ago but never recorded: deleted before the operator saw it?
UNRECORDED_SCHEDULED_RUNS = f"""
SELECT {_SCHEDULED_RUN} FROM drover_schedule_runs s
WHERE NOT s.done AND s.run_uid IS NOT NULL AND s.created_at < now() - interval '10 seconds'
  AND NOT EXISTS (SELECT 1 FROM drover_runs r WHERE r.id = s.run_uid)
LIMIT %s
"""

MARK_DONE = """
UPDATE drover_schedule_runs SET done = true, cancel_pending = false
WHERE namespace = %s AND name = %s
"""

RUNS_TO_CREATE = f"""
SELECT {_SCHEDULED_RUN} FROM drover_schedule_runs
WHERE run_uid IS NULL AND NOT done ORDER BY created_at LIMIT %s
"""

SET_RUN_UID = "UPDATE drover_schedule_runs SET run_uid = %s WHERE namespace = %s AND name = %s"

RUNS_TO_CANCEL = f"""
SELECT {_SCHEDULED_RUN} FROM drover_schedule_runs
WHERE cancel_pending AND run_uid IS NOT NULL ORDER BY created_at LIMIT %s
"""

CANCEL_SENT = """
UPDATE drover_schedule_runs SET cancel_pending = false WHERE namespace = %s AND name = %s
"""

SCHEDULE_STATUSES = """
SELECT s.namespace, s.task, s.last_schedule_time, s.next_at
FROM drover_schedules s
JOIN drover_tasks t ON t.namespace = s.namespace AND t.name = s.task AND t.uid = s.task_uid
"""

#: Decides a Task's tick from its record, its previous cursor (None: a new schedule), its
#: open scheduled runs and the time (the scheduling rules).
ScheduleDecider = Callable[
    [TaskRecord, ScheduleRecord | None, list[str], dt.datetime], ScheduleDecision
]


class ScheduleStore:
    """`drover_schedules` (a cursor per Task) and `drover_schedule_runs` (the runs schedules
    decided to create: an outbox until the TaskRun exists, then what concurrencyPolicy
    counts)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def now(self) -> dt.datetime:
        """Postgres' clock: replicas agree on what is due."""
        async with self.pool.connection() as conn:
            now: dt.datetime = await fetch_value(conn, DB_NOW)
            return now

    async def due(self, now: dt.datetime) -> list[ScheduleDue]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, ScheduleDue, TASKS_TO_SCHEDULE, (now,))

    async def seconds_to_next_tick(self) -> float | None:
        async with self.pool.connection() as conn:
            value = await fetch_value(conn, NEXT_DUE)
        return None if value is None else float(value)

    async def decide(
        self, namespace: str, name: str, now: dt.datetime, decide: ScheduleDecider
    ) -> ScheduleDecision | None:
        """Decide the Task's due tick and record it; None when there was nothing to decide
        (another replica decided first, or the Task has no schedule)."""
        async with transaction(self.pool) as conn:
            await advisory_lock(conn, f"drover.schedule/{namespace}/{name}")
            task = await fetch_one(conn, TaskRecord, GET_TASK, (namespace, name))
            if task is None or "schedule" not in task.spec:
                return None
            previous = await fetch_one(conn, ScheduleRecord, GET_SCHEDULE, (namespace, name))
            if previous is not None and previous.task_uid != task.uid:
                previous = None  # the Task was deleted and created again
            elif (
                previous is not None
                and previous.generation == task.generation
                and (previous.next_at is None or previous.next_at > now)
            ):
                return None  # nothing due: another replica decided first
            cursor = await conn.execute(OPEN_SCHEDULED_RUNS, (namespace, name))
            open_runs = [row["name"] for row in await cursor.fetchall()]
            decision = decide(task, previous, open_runs, now)
            if decision.cancel:
                await conn.execute(REQUEST_CANCEL, (namespace, list(decision.cancel)))
            if decision.create is not None:
                new = decision.create
                await conn.execute(
                    INSERT_SCHEDULED_RUN,
                    (namespace, new.name, name, task.uid, new.scheduled_at, Jsonb(new.payload)),
                )
            await record_task_events(conn, namespace, name, task.uid, decision.events)
            record = decision.record
            await conn.execute(
                UPSERT_SCHEDULE,
                {
                    "namespace": record.namespace,
                    "task": record.task,
                    "task_uid": record.task_uid,
                    "generation": record.generation,
                    "schedule_key": record.schedule_key,
                    "problem": record.problem,
                    "cursor_at": record.cursor_at,
                    "next_at": record.next_at,
                    "last_schedule_time": record.last_schedule_time,
                },
            )
        return decision

    async def drop_stale(self) -> list[ScheduleStatus]:
        """Forget schedules of Tasks that are gone or no longer have one."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, ScheduleStatus, DROP_STALE_SCHEDULES)

    async def statuses(self) -> list[ScheduleStatus]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, ScheduleStatus, SCHEDULE_STATUSES)

    # -- scheduled runs -------------------------------------------------------------------------

    async def settle(self) -> None:
        """Scheduled runs that finished, or were never created for a Task now gone, no
        longer count for concurrencyPolicy."""
        async with self.pool.connection() as conn:
            await conn.execute(SETTLE_FINISHED)
            await conn.execute(SETTLE_ORPHANED)

    async def unrecorded(self, limit: int) -> list[ScheduledRun]:
        """Runs created a while ago that the operator never recorded (deleted unseen?)."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, ScheduledRun, UNRECORDED_SCHEDULED_RUNS, (limit,))

    async def to_create(self, limit: int) -> list[ScheduledRun]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, ScheduledRun, RUNS_TO_CREATE, (limit,))

    async def created(self, namespace: str, name: str, uid: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(SET_RUN_UID, (uid, namespace, name))

    async def to_cancel(self, limit: int) -> list[ScheduledRun]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, ScheduledRun, RUNS_TO_CANCEL, (limit,))

    async def cancel_sent(self, namespace: str, name: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(CANCEL_SENT, (namespace, name))

    async def done(self, namespace: str, name: str) -> None:
        """The run no longer counts for concurrencyPolicy (gone, or refused)."""
        async with self.pool.connection() as conn:
            await conn.execute(MARK_DONE, (namespace, name))

    async def give_up(self, run: ScheduledRun, message: str) -> None:
        """A scheduled TaskRun that can never be created: done, with a Warning on the Task."""
        async with transaction(self.pool) as conn:
            await conn.execute(MARK_DONE, (run.namespace, run.name))
            await record_task_events(
                conn,
                run.namespace,
                run.task,
                run.task_uid,
                [EventRecord("Warning", "ScheduleFailed", message)],
            )
