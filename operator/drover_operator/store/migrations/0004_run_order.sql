-- Runs created in the same second (creationTimestamp has one-second resolution) are admitted
-- in the order they were recorded, not by the random order of their UIDs.
ALTER TABLE drover_runs ADD COLUMN seq bigserial;

DROP INDEX drover_runs_waiting;
CREATE INDEX drover_runs_waiting ON drover_runs (namespace, task, priority DESC, created_at, seq)
    WHERE phase IN ('Queued', 'Retrying');
