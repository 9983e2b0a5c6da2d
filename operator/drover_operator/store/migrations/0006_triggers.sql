-- Runs triggered from applications (migration 0006): idempotency keys, webhook signing keys,
-- why a waiting run waits, and the indexes of the run history API.

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
