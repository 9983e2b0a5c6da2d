"""Every SQL statement of the store, in one place."""

ADMISSION_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

NOTIFY = "SELECT pg_notify('drover_wake', %s)"

UPSERT_TASK = """
INSERT INTO drover_tasks (namespace, name, uid, generation, spec, invalid)
VALUES (%(namespace)s, %(name)s, %(uid)s, %(generation)s, %(spec)s, %(invalid)s)
ON CONFLICT (namespace, name) DO UPDATE
SET uid = EXCLUDED.uid, generation = EXCLUDED.generation, spec = EXCLUDED.spec,
    invalid = EXCLUDED.invalid, updated_at = now()
"""

DELETE_TASK = "DELETE FROM drover_tasks WHERE namespace = %s AND name = %s"

GET_TASK = "SELECT spec, invalid, generation FROM drover_tasks WHERE namespace = %s AND name = %s"

TASK_FOR_UPDATE = """
SELECT uid, generation, invalid FROM drover_tasks WHERE namespace = %s AND name = %s FOR UPDATE
"""

# Runs of a task whose readiness changed: their status shows why they wait.
TOUCH_WAITING_RUNS = """
UPDATE drover_runs SET version = version + 1
WHERE namespace = %s AND task = %s AND phase = 'Queued'
"""

INSERT_RUN = """
INSERT INTO drover_runs (id, namespace, name, task, generation, concurrency_key, priority,
                         payload, tags, phase, eligible_at, expires_at, created_at,
                         reason, message, finished_at, error, scheduled_at)
VALUES (%(id)s, %(namespace)s, %(name)s, %(task)s, %(generation)s, %(concurrency_key)s,
        %(priority)s, %(payload)s, %(tags)s, %(phase)s, %(eligible_at)s, %(expires_at)s,
        %(created_at)s, %(reason)s, %(message)s, %(finished_at)s, %(error)s, %(scheduled_at)s)
ON CONFLICT (id) DO NOTHING
"""

INSERT_EVENT = """
INSERT INTO drover_run_events (run_id, attempt, type, reason, message)
VALUES (%s, %s, %s, %s, %s)
"""

LOCK_RUN = "SELECT * FROM drover_runs WHERE id = %s FOR UPDATE"

ACTIVE_ATTEMPT = "SELECT * FROM drover_attempts WHERE run_id = %s AND active FOR UPDATE"

GET_ATTEMPT = "SELECT * FROM drover_attempts WHERE run_id = %s AND number = %s FOR UPDATE"

FINISH_RUN = """
UPDATE drover_runs
SET phase = %(phase)s, finished_at = now(), reason = %(reason)s, message = %(message)s,
    error = %(error)s, cancel_requested = cancel_requested OR %(cancel)s,
    deleted_at = COALESCE(deleted_at, %(deleted_at)s), version = version + 1
WHERE id = %(id)s
"""

RETRY_RUN = """
UPDATE drover_runs
SET phase = 'Retrying', eligible_at = %(eligible_at)s, reason = %(reason)s,
    message = %(message)s, error = %(error)s, version = version + 1
WHERE id = %(id)s
"""

END_ATTEMPT = """
UPDATE drover_attempts
SET state = %(state)s, active = false, finished_at = COALESCE(finished_at, now()),
    exit_code = %(exit_code)s, reason = %(reason)s, message = %(message)s,
    kill_requested = %(kill)s, kill_grace = %(kill_grace)s
WHERE run_id = %(run_id)s AND number = %(number)s
"""

SET_OUTPUT = "UPDATE drover_runs SET output = %s WHERE id = %s"

ACTIVE_USAGE = """
SELECT coalesce(sum(n), 0)::int AS active,
       coalesce(jsonb_object_agg(concurrency_key, n) FILTER (WHERE concurrency_key IS NOT NULL),
                '{}'::jsonb) AS per_key
FROM (SELECT concurrency_key, count(*) AS n FROM drover_attempts
      WHERE namespace = %s AND task = %s AND active GROUP BY concurrency_key) AS usage
"""

WAITING_RUNS = """
SELECT id, name, concurrency_key, attempt, payload, created_at, eligible_at FROM drover_runs
WHERE namespace = %s AND task = %s AND phase IN ('Queued', 'Retrying')
  AND NOT cancel_requested AND (eligible_at IS NULL OR eligible_at <= now())
ORDER BY priority DESC, created_at, seq
LIMIT %s OFFSET %s
"""

START_ATTEMPT = """
UPDATE drover_runs
SET phase = 'Starting', attempt = attempt + 1, eligible_at = NULL, reason = NULL,
    message = NULL, version = version + 1
WHERE id = %s
RETURNING attempt
"""

INSERT_ATTEMPT = """
INSERT INTO drover_attempts (run_id, number, namespace, task, concurrency_key, pod_name,
                             state, task_spec, pending_deadline_at, token_hash,
                             heartbeat_timeout)
VALUES (%(run_id)s, %(number)s, %(namespace)s, %(task)s, %(concurrency_key)s, %(pod_name)s,
        'Admitted', %(task_spec)s, now() + %(pending)s::interval, %(token_hash)s,
        %(heartbeat_timeout)s::interval)
"""

DUE_QUEUES = """
SELECT DISTINCT r.namespace, r.task FROM drover_runs r
JOIN drover_tasks t ON t.namespace = r.namespace AND t.name = r.task AND t.invalid IS NULL
WHERE r.phase IN ('Queued', 'Retrying') AND NOT r.cancel_requested
  AND (r.eligible_at IS NULL OR r.eligible_at <= now())
"""

NEXT_WAKE = """
SELECT min(eligible_at) AS at FROM drover_runs
WHERE phase IN ('Queued', 'Retrying') AND eligible_at > now()
"""

MARK_RUNNING = """
UPDATE drover_attempts
SET state = 'Running', pod_created = true,
    -- Container start times have one-second resolution; an attempt cannot start before it
    -- was admitted, so the admission time bounds the truncation.
    started_at = GREATEST(%(started_at)s::timestamptz, admitted_at),
    deadline_at = GREATEST(%(started_at)s::timestamptz, admitted_at) + %(limit)s::interval
WHERE run_id = %(run_id)s AND number = %(number)s AND state = 'Admitted' AND active
RETURNING started_at
"""

RUN_STARTED = """
UPDATE drover_runs
SET phase = 'Running', started_at = COALESCE(started_at, %s), version = version + 1
WHERE id = %s AND phase = 'Starting'
"""

ATTEMPT_TASK_SPEC = "SELECT task_spec FROM drover_attempts WHERE run_id = %s AND number = %s"

MARK_POD_CREATED = """
UPDATE drover_attempts a SET pod_created = true
FROM drover_runs r
WHERE a.run_id = %s AND a.number = %s AND r.id = a.run_id AND NOT a.pod_created
RETURNING r.namespace, r.task, extract(epoch FROM now() - r.created_at) AS latency
"""

PODS_TO_CREATE = """
SELECT a.run_id, a.number, a.pod_name, a.task_spec, r.namespace, r.name, r.task
FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
WHERE a.active AND a.state = 'Admitted' AND NOT a.pod_created
ORDER BY a.admitted_at
LIMIT %s
"""

PODS_TO_KILL = """
SELECT a.run_id, a.number, a.pod_name, a.kill_grace, r.namespace
FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
WHERE a.kill_requested LIMIT %s
"""

KILLED = "UPDATE drover_attempts SET kill_requested = false WHERE run_id = %s AND number = %s"

EXPIRE_RUNS = """
UPDATE drover_runs
SET phase = 'Expired', finished_at = now(), reason = 'Expired',
    message = 'not started within its ttl', version = version + 1
WHERE phase = 'Queued' AND attempt = 0 AND NOT cancel_requested AND expires_at <= now()
RETURNING id, namespace, name, task, created_at
"""

DUE_PENDING = """
SELECT a.run_id, a.number, a.pod_name, r.namespace FROM drover_attempts a
JOIN drover_runs r ON r.id = a.run_id
WHERE a.active AND a.state = 'Admitted' AND a.pending_deadline_at <= now()
LIMIT %s
"""

DUE_STALLS = """
SELECT run_id, number, extract(epoch FROM heartbeat_timeout) AS timeout FROM drover_attempts
WHERE active AND state = 'Running' AND heartbeat_timeout IS NOT NULL
  AND GREATEST(coalesce(heartbeat_at, started_at), started_at) < now() - heartbeat_timeout
LIMIT %s
"""

DUE_DEADLINES = """
SELECT a.run_id, a.number FROM drover_attempts a
WHERE a.active AND a.state = 'Running' AND a.deadline_at <= now()
LIMIT %s
"""

UNPUSHED_RUNS = """
SELECT r.*, t.invalid AS task_invalid, (t.name IS NOT NULL) AS task_exists
FROM drover_runs r
LEFT JOIN drover_tasks t ON t.namespace = r.namespace AND t.name = r.task
WHERE r.version > r.pushed_version
ORDER BY r.version - r.pushed_version DESC
LIMIT %s
"""

RUN_ATTEMPTS = """
SELECT number, pod_name, state, admitted_at, started_at, finished_at, exit_code, reason, message
FROM drover_attempts WHERE run_id = %s ORDER BY number DESC LIMIT %s
"""

MARK_PUSHED = """
UPDATE drover_runs SET pushed_version = %s WHERE id = %s AND pushed_version < %s
"""

UNPOSTED_EVENTS = """
SELECT e.id, e.run_id, e.type, e.reason, e.message, e.at, r.namespace, r.name
FROM drover_run_events e JOIN drover_runs r ON r.id = e.run_id
WHERE NOT e.posted ORDER BY e.id LIMIT %s
"""

MARK_POSTED = "UPDATE drover_run_events SET posted = true WHERE id = ANY(%s)"

TASK_COUNTS = """
SELECT t.namespace, t.name, t.generation, t.invalid, s.problem AS schedule_problem,
       count(r.id) FILTER (WHERE r.phase IN ('Starting', 'Running')) AS active,
       count(r.id) FILTER (WHERE r.phase IN ('Queued', 'Retrying')) AS queued
FROM drover_tasks t
LEFT JOIN drover_schedules s ON s.namespace = t.namespace AND s.task = t.name
     AND s.task_uid = t.uid
LEFT JOIN drover_runs r ON r.namespace = t.namespace AND r.task = t.name
     AND r.phase IN ('Starting', 'Running', 'Queued', 'Retrying')
GROUP BY t.namespace, t.name, t.generation, t.invalid, s.problem
"""

RUN_EVENTS = """
SELECT at, attempt, type, reason, message FROM drover_run_events
WHERE run_id = %s ORDER BY id
"""

GET_RUN = "SELECT * FROM drover_runs WHERE id = %s"


# -- the run API ----------------------------------------------------------------------------

API_ATTEMPT = """
SELECT a.run_id, a.number, a.active, a.state, a.token_hash, a.task_spec,
       extract(epoch FROM a.heartbeat_timeout) AS heartbeat_seconds,
       r.namespace, r.name, r.task, r.attempt AS current_attempt, r.payload, r.metadata,
       r.scheduled_at, r.phase, r.cancel_requested
FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
WHERE a.run_id = %s AND a.number = %s
"""

RUN_STEPS = "SELECT seq, name, value FROM drover_steps WHERE run_id = %s ORDER BY seq"

HEARTBEAT = """
UPDATE drover_attempts SET heartbeat_at = now()
WHERE run_id = %s AND number = %s AND active
"""

INSERT_STEP = """
INSERT INTO drover_steps (run_id, seq, name, value, attempt)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (run_id, seq) DO NOTHING
"""

# Credential check and insert in one round trip. `existing` is read from the snapshot before
# the insert, so it is the previously recorded name (NULL when this statement inserted).
PUT_STEP_FAST = """
WITH attempt AS (
    SELECT 1 FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
    WHERE a.run_id = %(run_id)s AND a.number = %(number)s AND a.active
      AND a.token_hash = %(token_hash)s AND r.attempt = a.number
), inserted AS (
    INSERT INTO drover_steps (run_id, seq, name, value, attempt)
    SELECT %(run_id)s, %(seq)s, %(name)s, %(value)s, %(number)s WHERE EXISTS (SELECT 1 FROM attempt)
    ON CONFLICT (run_id, seq) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM attempt) AS authorized,
       EXISTS (SELECT 1 FROM inserted) AS inserted,
       (SELECT name FROM drover_steps WHERE run_id = %(run_id)s AND seq = %(seq)s) AS existing
"""

STEP_NAMES = "SELECT seq, name FROM drover_steps WHERE run_id = %s AND seq = ANY(%s)"

RUN_METADATA = "SELECT metadata FROM drover_runs WHERE id = %s"

PATCH_METADATA = """
UPDATE drover_runs
SET metadata = jsonb_strip_nulls(metadata || %s), version = version + 1
WHERE id = %s
RETURNING metadata
"""

INSERT_LOG = """
INSERT INTO drover_logs (run_id, attempt, at, level, logger, message)
VALUES (%s, %s, %s, %s, %s, %s)
"""

RUN_LOGS_PAGE = """
SELECT id, attempt, at, level, logger, message FROM drover_logs
WHERE run_id = %s AND id > %s ORDER BY id LIMIT %s
"""

# The newest run of that name: a TaskRun deleted and created again is a new run.
RUN_BY_NAME = """
SELECT * FROM drover_runs WHERE namespace = %s AND name = %s
ORDER BY created_at DESC LIMIT 1
"""

RUN_STEP_NAMES = "SELECT seq, name FROM drover_steps WHERE run_id = %s ORDER BY seq"

# -- shared keys ----------------------------------------------------------------------------

INSERT_KEY = "INSERT INTO drover_keys (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING"

GET_KEY = "SELECT value FROM drover_keys WHERE name = %s"
