-- Workflows (migration 0007): child runs, durable waits that suspend a run (its pod exits and
-- its slot is freed), and waitpoint tokens.

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
