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
