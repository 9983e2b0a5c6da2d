-- The runner's API: per-attempt credentials (stored hashed), heartbeats, step checkpoints,
-- metadata and logs that outlive the pod.

ALTER TABLE drover_runs
    ADD COLUMN metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN scheduled_at timestamptz;

ALTER TABLE drover_attempts
    -- sha256 of the attempt's bearer token; the token itself is never stored.
    ADD COLUMN token_hash        text,
    -- SDK attempts only: stalled when no heartbeat for this long.
    ADD COLUMN heartbeat_timeout interval,
    -- Grace period for stopping the pod (NULL = the pod's own; 0 for a frozen process).
    ADD COLUMN kill_grace        integer;

CREATE INDEX drover_attempts_beating ON drover_attempts (run_id)
    WHERE active AND heartbeat_timeout IS NOT NULL;

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
