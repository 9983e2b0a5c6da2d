"""SQL of the scheduler and the history cleanup (migration 0003's tables)."""

from drover_operator.outcomes import FINISHED

_FINISHED = ", ".join(f"'{phase}'" for phase in FINISHED)

DB_NOW = "SELECT clock_timestamp() AS now"

# One decision at a time per Task, across replicas.
SCHEDULE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

# Tasks whose schedule needs a decision: new, changed, or a tick is due.
TASKS_TO_SCHEDULE = """
SELECT t.namespace, t.name, t.uid, (s.task_uid IS DISTINCT FROM t.uid) AS fresh
FROM drover_tasks t
LEFT JOIN drover_schedules s ON s.namespace = t.namespace AND s.task = t.name
WHERE t.spec ? 'schedule'
  AND (s.task IS NULL OR s.task_uid <> t.uid OR s.generation <> t.generation
       OR s.next_at <= %s)
"""

GET_TASK = """
SELECT uid, generation, spec, invalid FROM drover_tasks WHERE namespace = %s AND name = %s
"""

GET_SCHEDULE = "SELECT * FROM drover_schedules WHERE namespace = %s AND task = %s"

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
RETURNING s.namespace, s.task
"""

NEXT_DUE = """
SELECT extract(epoch FROM min(next_at) - clock_timestamp())::float8 AS wait
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

# Created a while ago but never recorded: deleted before the operator saw it?
UNRECORDED_SCHEDULED_RUNS = """
SELECT s.namespace, s.name, s.run_uid FROM drover_schedule_runs s
WHERE NOT s.done AND s.run_uid IS NOT NULL AND s.created_at < now() - interval '10 seconds'
  AND NOT EXISTS (SELECT 1 FROM drover_runs r WHERE r.id = s.run_uid)
LIMIT %s
"""

MARK_DONE = """
UPDATE drover_schedule_runs SET done = true, cancel_pending = false
WHERE namespace = %s AND name = %s
"""

RUNS_TO_CREATE = """
SELECT namespace, name, task, task_uid, scheduled_at, payload FROM drover_schedule_runs
WHERE run_uid IS NULL AND NOT done ORDER BY created_at LIMIT %s
"""

SET_RUN_UID = "UPDATE drover_schedule_runs SET run_uid = %s WHERE namespace = %s AND name = %s"

RUNS_TO_CANCEL = """
SELECT namespace, name, run_uid FROM drover_schedule_runs
WHERE cancel_pending AND run_uid IS NOT NULL ORDER BY created_at LIMIT %s
"""

CANCEL_SENT = """
UPDATE drover_schedule_runs SET cancel_pending = false WHERE namespace = %s AND name = %s
"""

INSERT_TASK_EVENT = """
INSERT INTO drover_task_events (namespace, task, task_uid, type, reason, message)
VALUES (%s, %s, %s, %s, %s, %s)
"""

UNPOSTED_TASK_EVENTS = """
SELECT id, namespace, task, task_uid, at, type, reason, message FROM drover_task_events
WHERE NOT posted ORDER BY id LIMIT %s
"""

MARK_TASK_EVENTS_POSTED = "UPDATE drover_task_events SET posted = true WHERE id = ANY(%s)"

SCHEDULE_STATUSES = """
SELECT s.namespace, s.task, s.last_schedule_time, s.next_at
FROM drover_schedules s
JOIN drover_tasks t ON t.namespace = s.namespace AND t.name = s.task AND t.uid = s.task_uid
"""

# -- history ----------------------------------------------------------------------------------

TASKS_WITH_HISTORY = """
SELECT namespace, name, spec -> 'history' AS history FROM drover_tasks WHERE spec ? 'history'
"""

# Finished runs of one Task whose TaskRun exists, beyond keepSucceeded/keepFailed (newest
# kept) or older than ttlAfterFinished. A NULL limit selects nothing.
RUNS_BEYOND_HISTORY = """
SELECT id, name, namespace FROM (
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

RUNS_WITH_PODS_LEFT = """
SELECT DISTINCT a.run_id, r.namespace FROM drover_attempts a
JOIN drover_runs r ON r.id = a.run_id
WHERE a.pod_created AND NOT a.pod_removed AND NOT a.active
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
