-- An attempt's maxDuration is recorded when it is admitted, so that marking it Running sets its
-- deadline in the same statement (the store no longer parses Task specs).
ALTER TABLE drover_attempts ADD COLUMN max_duration interval;

-- Attempts admitted before this migration and not yet running: take the limit from the spec
-- they were admitted with (Go duration strings in h/m/s/ms, which Postgres also reads).
UPDATE drover_attempts
SET max_duration = (task_spec -> 'timeouts' ->> 'maxDuration')::interval
WHERE active AND state = 'Admitted'
  AND task_spec -> 'timeouts' ->> 'maxDuration' ~ '^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$';
