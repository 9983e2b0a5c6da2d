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
