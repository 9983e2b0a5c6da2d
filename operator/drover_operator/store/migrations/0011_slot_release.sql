-- concurrency.slotRelease: PodGone (migration 0011). An attempt of such a Task keeps its slot
-- after it ends, until its pod is seen terminated or deleted: `holds_pod` until then.
-- Admission counts `active OR holds_pod`; the release sweep reads the ended ones.
ALTER TABLE drover_attempts ADD COLUMN holds_pod boolean NOT NULL DEFAULT false;
CREATE INDEX drover_attempts_holding ON drover_attempts (namespace, task) WHERE holds_pod;
