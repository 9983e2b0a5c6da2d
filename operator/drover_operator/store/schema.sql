-- The current schema in one file, for reading and for the test that a fresh schema equals
-- the migrated one. Change it together with a new numbered migration in migrations/.

-- Runs, attempts and their history. A run is keyed by its TaskRun's UID, so recording the
-- same TaskRun twice (a replayed watch event, a second replica) is a no-op.

CREATE TABLE drover_tasks (
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    uid         uuid        NOT NULL,
    generation  bigint      NOT NULL,
    spec        jsonb       NOT NULL,
    -- NULL while the spec is usable; otherwise why not (shown in the Task's Ready condition).
    invalid     text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

CREATE TABLE drover_runs (
    id               uuid        PRIMARY KEY,
    namespace        text        NOT NULL,
    name             text        NOT NULL,
    task             text        NOT NULL,
    generation       bigint      NOT NULL DEFAULT 1,
    concurrency_key  text,
    priority         integer     NOT NULL DEFAULT 0,
    payload          jsonb,
    tags             jsonb,
    phase            text        NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    -- Not admitted before this time (delay, notBefore, retry backoff).
    eligible_at      timestamptz,
    -- Expired if no attempt has started by this time (ttl).
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    reason           text,
    message          text,
    error            jsonb,
    output           jsonb,
    cancel_requested boolean     NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    -- Bumped with every change the TaskRun's status shows; status is pushed until caught up.
    version          bigint      NOT NULL DEFAULT 1,
    pushed_version   bigint      NOT NULL DEFAULT 0,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    scheduled_at     timestamptz,
    -- Admission order among runs created in the same second: the order they were recorded.
    seq              bigserial
);

CREATE INDEX drover_runs_waiting ON drover_runs (namespace, task, priority DESC, created_at, seq)
    WHERE phase IN ('Queued', 'Retrying');
CREATE INDEX drover_runs_unpushed ON drover_runs (id) WHERE version > pushed_version;
CREATE INDEX drover_runs_by_task ON drover_runs (namespace, task, phase);

CREATE TABLE drover_attempts (
    run_id          uuid        NOT NULL REFERENCES drover_runs (id) ON DELETE CASCADE,
    number          integer     NOT NULL,
    -- Copied from the run so slots can be counted from this table alone.
    namespace       text        NOT NULL,
    task            text        NOT NULL,
    concurrency_key text,
    pod_name        text        NOT NULL,
    -- Admitted | Running | Succeeded | Failed | TimedOut | Canceled | Lost
    state           text        NOT NULL,
    -- Holds one of the Task's concurrency slots; cleared in the transaction ending the attempt.
    active          boolean     NOT NULL DEFAULT true,
    pod_created     boolean     NOT NULL DEFAULT false,
    -- The pod must be stopped (cancel, timeout); cleared once it is gone.
    kill_requested  boolean     NOT NULL DEFAULT false,
    admitted_at     timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    exit_code       integer,
    reason          text,
    message         text,
    heartbeat_at    timestamptz,
    -- The Task's spec when the attempt was admitted: its pod and retry policy come from it.
    task_spec       jsonb       NOT NULL,
    -- timeouts.pending: fail if not started by then; timeouts.maxDuration: stop if running then.
    pending_deadline_at timestamptz,
    deadline_at     timestamptz,
    -- sha256 of the attempt's bearer token; the token itself is never stored.
    token_hash      text,
    -- SDK attempts only: stalled when no heartbeat for this long.
    heartbeat_timeout interval,
    -- Grace period for stopping the pod (NULL = the pod's own; 0 for a frozen process).
    kill_grace      integer,
    PRIMARY KEY (run_id, number)
);

CREATE INDEX drover_attempts_active ON drover_attempts (namespace, task) WHERE active;
CREATE INDEX drover_attempts_kill ON drover_attempts (run_id) WHERE kill_requested;
CREATE INDEX drover_attempts_beating ON drover_attempts (run_id)
    WHERE active AND heartbeat_timeout IS NOT NULL;

-- Each run's history; also the outbox for Kubernetes Events (posted once, after commit).
CREATE TABLE drover_run_events (
    id       bigserial   PRIMARY KEY,
    run_id   uuid        NOT NULL REFERENCES drover_runs (id) ON DELETE CASCADE,
    at       timestamptz NOT NULL DEFAULT now(),
    attempt  integer,
    type     text        NOT NULL,
    reason   text        NOT NULL,
    message  text        NOT NULL,
    posted   boolean     NOT NULL DEFAULT false
);

CREATE INDEX drover_run_events_by_run ON drover_run_events (run_id, id);
CREATE INDEX drover_run_events_unposted ON drover_run_events (id) WHERE NOT posted;

-- The runner API (migration 0002).
CREATE TABLE drover_steps (
    run_id     uuid        NOT NULL REFERENCES drover_runs (id) ON DELETE CASCADE,
    seq        integer     NOT NULL,
    name       text        NOT NULL,
    value      jsonb,
    attempt    integer     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE drover_logs (
    id      bigserial   PRIMARY KEY,
    run_id  uuid        NOT NULL REFERENCES drover_runs (id) ON DELETE CASCADE,
    attempt integer     NOT NULL,
    at      timestamptz NOT NULL,
    level   text        NOT NULL,
    logger  text        NOT NULL,
    message text        NOT NULL
);

CREATE INDEX drover_logs_by_run ON drover_logs (run_id, id);

-- Keys shared by all replicas (the HMAC key that derives attempt tokens).
CREATE TABLE drover_keys (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);

-- Schedules and history (migration 0003).

-- One row per Task with a schedule: the cursor that makes restarts neither flood nor skip.
CREATE TABLE drover_schedules (
    namespace          text        NOT NULL,
    task               text        NOT NULL,
    task_uid           uuid        NOT NULL,
    generation         bigint      NOT NULL,
    -- cron, time zone and suspend as evaluated; a change restarts the cursor at that moment.
    schedule_key       text        NOT NULL,
    -- Why the schedule creates no runs (the Task's Ready condition), or NULL.
    problem            text,
    -- Every tick at or before this instant has been decided: run, skipped or missed.
    cursor_at          timestamptz,
    next_at            timestamptz,
    last_schedule_time timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, task)
);

CREATE INDEX drover_schedules_due ON drover_schedules (next_at);

-- The runs the scheduler decided to create (an outbox until the TaskRun exists), and
-- whether each still counts for concurrencyPolicy.
CREATE TABLE drover_schedule_runs (
    namespace     text        NOT NULL,
    name          text        NOT NULL,
    task          text        NOT NULL,
    task_uid      uuid        NOT NULL,
    scheduled_at  timestamptz NOT NULL,
    payload       jsonb,
    -- The TaskRun's UID once created; NULL while its creation is pending.
    run_uid       uuid,
    -- concurrencyPolicy Replace: spec.cancel is still to be set on the TaskRun.
    cancel_pending boolean    NOT NULL DEFAULT false,
    -- Finished, or gone: no longer active for concurrencyPolicy.
    done          boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

CREATE INDEX drover_schedule_runs_open ON drover_schedule_runs (namespace, task) WHERE NOT done;
CREATE INDEX drover_schedule_runs_outbox ON drover_schedule_runs (created_at)
    WHERE run_uid IS NULL OR cancel_pending;

-- Events on Tasks (invalid schedule, missed or skipped ticks): posted once, after commit.
CREATE TABLE drover_task_events (
    id        bigserial   PRIMARY KEY,
    namespace text        NOT NULL,
    task      text        NOT NULL,
    task_uid  uuid        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    type      text        NOT NULL,
    reason    text        NOT NULL,
    message   text        NOT NULL,
    posted    boolean     NOT NULL DEFAULT false
);

CREATE INDEX drover_task_events_unposted ON drover_task_events (id) WHERE NOT posted;

-- History: pods of finished runs are removed after DROVER_POD_RETENTION; records of runs
-- whose TaskRun is gone are purged after DROVER_HISTORY_RETENTION.
ALTER TABLE drover_attempts ADD COLUMN pod_removed boolean NOT NULL DEFAULT false;

CREATE INDEX drover_attempts_pods_left ON drover_attempts (run_id)
    WHERE pod_created AND NOT pod_removed;
CREATE INDEX drover_runs_purgeable ON drover_runs (finished_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX drover_runs_finished ON drover_runs (namespace, task, finished_at)
    WHERE deleted_at IS NULL AND finished_at IS NOT NULL;

-- An attempt's timeouts.maxDuration, recorded at admission (migration 0005).
ALTER TABLE drover_attempts ADD COLUMN max_duration interval;

-- Runs triggered from applications (migration 0006).

-- A key bound to a run, per (namespace, Task). Released (the row replaced) when it expires or
-- its run ends Failed, TimedOut, Canceled or Expired; it outlives the run's TaskRun.
CREATE TABLE drover_idempotency_keys (
    namespace   text        NOT NULL,
    task        text        NOT NULL,
    key         text        NOT NULL,
    -- The TaskRun's name, decided with the binding, and its UID once created.
    run_name    text        NOT NULL,
    run_id      uuid,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, task, key)
);

CREATE INDEX drover_idempotency_keys_expiry ON drover_idempotency_keys (expires_at);

-- A Task's webhook: its signing key (kept here, so the operator never reads Secrets) and the
-- UID of the Secret it last wrote the key to (a new UID: the Secret was deleted, so rotate).
CREATE TABLE drover_webhooks (
    namespace          text        NOT NULL,
    task               text        NOT NULL,
    task_uid           uuid        NOT NULL,
    key                bytea       NOT NULL,
    idempotency_header text        NOT NULL,
    secret_uid         text,
    checked_at         timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, task)
);

-- Why a run that could start waits: ConcurrencyLimit or PerKeyLimit (set by admission).
ALTER TABLE drover_runs ADD COLUMN wait_reason text;
ALTER TABLE drover_runs ADD COLUMN wait_message text;

-- The run history API: newest first, by namespace and optionally Task; tags by containment.
CREATE INDEX drover_runs_history ON drover_runs (namespace, created_at DESC, id DESC);
CREATE INDEX drover_runs_history_by_task ON drover_runs (namespace, task, created_at DESC, id DESC);
CREATE INDEX drover_runs_tags ON drover_runs USING gin (tags jsonb_path_ops);

-- Workflows (migration 0007).
-- A run's executions: an attempt (a try under the retry policy) may run in several pods, one
-- per resume after a suspended wait. `attempt` stays the try (what users see); `execution`
-- numbers every pod of the run and is what credentials and fencing are keyed by.
ALTER TABLE drover_runs ADD COLUMN execution integer NOT NULL DEFAULT 0;
UPDATE drover_runs SET execution = attempt;
-- The next admission resumes the current try instead of starting a new one.
ALTER TABLE drover_runs ADD COLUMN resume boolean NOT NULL DEFAULT false;
-- What a Waiting run waits on (status.waitingFor).
ALTER TABLE drover_runs ADD COLUMN waiting_for jsonb;
-- Child runs: the run that triggered it, and at which position of its code.
ALTER TABLE drover_runs ADD COLUMN parent_id uuid;
ALTER TABLE drover_runs ADD COLUMN parent_name text;
ALTER TABLE drover_runs ADD COLUMN child_count integer NOT NULL DEFAULT 0;

-- One replica at a time writes a run's TaskRun status: without this, a replica could write an
-- older status after another wrote a newer one, and nobody would write it again.
ALTER TABLE drover_runs ADD COLUMN push_lease_until timestamptz;
CREATE INDEX drover_runs_children ON drover_runs (parent_id) WHERE parent_id IS NOT NULL;

ALTER TABLE drover_attempts ADD COLUMN try_number integer;
UPDATE drover_attempts SET try_number = number;
ALTER TABLE drover_attempts ALTER COLUMN try_number SET NOT NULL;

-- A position in a run's code that waits: on a time, a token, or other runs. Created when the
-- code first reaches it (so a retry never restarts a timer); resolved once, when its result
-- is recorded as the position's step.
CREATE TABLE drover_waitpoints (
    run_id      uuid        NOT NULL REFERENCES drover_runs (id) ON DELETE CASCADE,
    seq         integer     NOT NULL,
    -- Duration | Token | Runs
    kind        text        NOT NULL,
    wake_at     timestamptz,
    token_id    uuid,
    runs        uuid[],
    -- pending: the run still executes (a short wait, in its pod); waiting: the run is
    -- suspended on it; resolved; canceled.
    state       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX drover_waitpoints_waiting ON drover_waitpoints (wake_at) WHERE state = 'waiting';

-- Tokens a run waits on until a person or a system completes them (or they time out).
CREATE TABLE drover_tokens (
    id              uuid        PRIMARY KEY,
    namespace       text        NOT NULL,
    run_id          uuid        NOT NULL REFERENCES drover_runs (id) ON DELETE CASCADE,
    seq             integer     NOT NULL,
    timeout_at      timestamptz NOT NULL,
    -- waiting | completed | timed_out
    state           text        NOT NULL,
    data            jsonb,
    tags            jsonb,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    UNIQUE (run_id, seq)
);

CREATE INDEX drover_tokens_waiting ON drover_tokens (namespace, created_at) WHERE state = 'waiting';
CREATE INDEX drover_tokens_timeouts ON drover_tokens (timeout_at) WHERE state = 'waiting';
CREATE UNIQUE INDEX drover_tokens_idempotency ON drover_tokens (namespace, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- What the command line and the dashboard read (migration 0008).
-- When a step began, as the runner reports it (protocol 2; NULL from older runners).
ALTER TABLE drover_steps ADD COLUMN started_at timestamptz;
COMMENT ON COLUMN drover_steps.attempt IS 'the attempt (try) that recorded the step';
-- The run history across namespaces, newest first (optionally of one Task).
CREATE INDEX drover_runs_history_all ON drover_runs (created_at DESC, id DESC);
CREATE INDEX drover_runs_history_all_by_task ON drover_runs (task, created_at DESC, id DESC);
-- A Task's runs that finished in a recent window, cleaned-up ones included (the Task
-- overview: outcomes and durations of the last 24 hours).
CREATE INDEX drover_runs_finished_recent ON drover_runs (namespace, task, finished_at)
    WHERE finished_at IS NOT NULL;

-- The dashboard's live updates (migration 0009): a run recorded or changing phase, and log
-- lines written, NOTIFY `drover_events` (`run <namespace> <id>`, `logs <run id>`) on commit.
-- Triggers, so that every path that writes a run or a line tells, whoever wrote it.
CREATE FUNCTION drover_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('drover_events', 'run ' || NEW.namespace || ' ' || NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER drover_runs_recorded AFTER INSERT ON drover_runs
    FOR EACH ROW EXECUTE FUNCTION drover_notify_run();
CREATE TRIGGER drover_runs_phase AFTER UPDATE OF phase ON drover_runs
    FOR EACH ROW WHEN (OLD.phase IS DISTINCT FROM NEW.phase)
    EXECUTE FUNCTION drover_notify_run();
CREATE FUNCTION drover_notify_logs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('drover_events', 'logs ' || l.run_id::text)
    FROM (SELECT DISTINCT run_id FROM new_lines) l;
    RETURN NULL;
END $$;
CREATE TRIGGER drover_logs_written AFTER INSERT ON drover_logs
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify_logs();
-- Unfinished runs in creation order (migration 0010): what the vanished-runs check lists
-- against a TaskRun listing. Without it that query read every run, finished or not (issue 18,
-- tests/store/test_hot_queries.py). The phase list is `FINISHED_PHASES`, sorted, as the
-- query spells it, so that Postgres can prove the query's condition implies the index's.
CREATE INDEX drover_runs_unfinished ON drover_runs (created_at)
    WHERE deleted_at IS NULL
      AND phase NOT IN ('Canceled', 'Expired', 'Failed', 'Succeeded', 'TimedOut');

-- concurrency.slotRelease: PodGone (migration 0011). An attempt of such a Task keeps its slot
-- after it ends, until its pod is seen terminated or deleted: `holds_pod` until then.
-- Admission counts `active OR holds_pod`; the release sweep reads the ended ones.
ALTER TABLE drover_attempts ADD COLUMN holds_pod boolean NOT NULL DEFAULT false;
CREATE INDEX drover_attempts_holding ON drover_attempts (namespace, task) WHERE holds_pod;
