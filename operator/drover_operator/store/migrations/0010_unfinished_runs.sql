-- Unfinished runs in creation order (migration 0010): what the vanished-runs check lists
-- against a TaskRun listing. Without it that query read every run, finished or not (issue 18,
-- tests/store/test_hot_queries.py). The phase list is `FINISHED_PHASES`, sorted, as the
-- query spells it, so that Postgres can prove the query's condition implies the index's.
CREATE INDEX drover_runs_unfinished ON drover_runs (created_at)
    WHERE deleted_at IS NULL
      AND phase NOT IN ('Canceled', 'Expired', 'Failed', 'Succeeded', 'TimedOut');
