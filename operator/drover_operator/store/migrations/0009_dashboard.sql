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
