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
    pushed_version   bigint      NOT NULL DEFAULT 0
);

CREATE INDEX drover_runs_waiting ON drover_runs (namespace, task, priority DESC, created_at, id)
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
    PRIMARY KEY (run_id, number)
);

CREATE INDEX drover_attempts_active ON drover_attempts (namespace, task) WHERE active;
CREATE INDEX drover_attempts_kill ON drover_attempts (run_id) WHERE kill_requested;

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
