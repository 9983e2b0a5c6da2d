"""What the command line and the dashboard read beyond a run's record: its steps on a
timeline, the positions where it waited, and each Task's load and recent outcomes."""

from __future__ import annotations

import datetime as dt

from drover.protocol.phases import ACTIVE_PHASES, WAITING_PHASES, Phase
from drover_operator.domain.records import StepTiming, TaskSummaryRecord, WaitSummary
from drover_operator.store.db import Pool, fetch_all, sql_list

_UNFINISHED = sql_list({*ACTIVE_PHASES, *WAITING_PHASES, Phase.WAITING})

# When a step began: as the runner reported it (protocol 2); a wait, when its waitpoint was
# created; otherwise when its attempt reached it (the previous checkpoint of the same
# attempt, or the attempt's start).
STEP_TIMELINE = """
SELECT s.seq, s.name, s.attempt,
       coalesce(s.started_at, w.created_at,
                greatest(lag(s.created_at) OVER (PARTITION BY s.attempt ORDER BY s.seq),
                         (SELECT min(a.started_at) FROM drover_attempts a
                          WHERE a.run_id = s.run_id AND a.try_number = s.attempt))) AS started_at,
       s.created_at AS finished_at
FROM drover_steps s
LEFT JOIN drover_waitpoints w ON w.run_id = s.run_id AND w.seq = s.seq
WHERE s.run_id = %s
ORDER BY s.seq
LIMIT %s
"""

WAITS = """
SELECT w.seq, w.kind, w.state, w.created_at, w.resolved_at, w.wake_at,
       w.token_id::text AS token_id,
       (SELECT array_agg(coalesce(r.name, c.id::text) ORDER BY c.ord)
        FROM unnest(w.runs) WITH ORDINALITY AS c(id, ord)
        LEFT JOIN drover_runs r ON r.id = c.id) AS runs
FROM drover_waitpoints w
WHERE w.run_id = %s
ORDER BY w.seq
"""

# Per Task: its runs holding or waiting for a slot now (drover_runs_by_task), and those that
# finished since `since`, cleaned-up ones included (drover_runs_finished_recent).
TASK_SUMMARIES = f"""
SELECT t.namespace, t.name, t.spec, t.invalid,
       now_.running, now_.queued, now_.waiting,
       recent.succeeded, recent.failed, recent.canceled, recent.p50_seconds, recent.p95_seconds,
       recent.p99_seconds, s.next_at
FROM drover_tasks t
LEFT JOIN drover_schedules s ON s.namespace = t.namespace AND s.task = t.name
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.phase IN ('Starting', 'Running'))::int AS running,
           count(*) FILTER (WHERE r.phase IN ('Queued', 'Retrying'))::int AS queued,
           count(*) FILTER (WHERE r.phase = 'Waiting')::int AS waiting
    FROM drover_runs r
    WHERE r.namespace = t.namespace AND r.task = t.name AND r.phase IN ({_UNFINISHED})
) now_
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.phase = 'Succeeded')::int AS succeeded,
           count(*) FILTER (WHERE r.phase IN ('Failed', 'TimedOut'))::int AS failed,
           count(*) FILTER (WHERE r.phase IN ('Canceled', 'Expired'))::int AS canceled,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM r.finished_at - r.started_at))
               FILTER (WHERE r.phase = 'Succeeded' AND r.started_at IS NOT NULL) AS p50_seconds,
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM r.finished_at - r.started_at))
               FILTER (WHERE r.phase = 'Succeeded' AND r.started_at IS NOT NULL) AS p95_seconds,
           percentile_cont(0.99) WITHIN GROUP (
               ORDER BY extract(epoch FROM r.finished_at - r.started_at))
               FILTER (WHERE r.phase = 'Succeeded' AND r.started_at IS NOT NULL) AS p99_seconds
    FROM drover_runs r
    WHERE r.namespace = t.namespace AND r.task = t.name
      AND r.finished_at IS NOT NULL AND r.finished_at >= %(since)s
) recent
WHERE (%(namespace)s::text IS NULL OR t.namespace = %(namespace)s)
ORDER BY t.namespace, t.name
"""


class OverviewStore:
    """Reads for overviews: a run's timeline and waits, and the Task overview."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def steps(self, run_id: str, limit: int = 10_000) -> list[StepTiming]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, StepTiming, STEP_TIMELINE, (run_id, limit))

    async def waits(self, run_id: str) -> list[WaitSummary]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, WaitSummary, WAITS, (run_id,))

    async def tasks(self, namespace: str | None, since: dt.datetime) -> list[TaskSummaryRecord]:
        """Every Task (of `namespace`, or of all), with its runs now and since `since`."""
        async with self.pool.connection() as conn:
            return await fetch_all(
                conn, TaskSummaryRecord, TASK_SUMMARIES, {"namespace": namespace, "since": since}
            )
