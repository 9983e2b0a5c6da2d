"""The Event outbox: history lines recorded in a decision's transaction, posted to Kubernetes
as Events after it committed (by `converge.events`), on TaskRuns and on Tasks."""

from __future__ import annotations

from collections.abc import Sequence

from drover_operator.domain.lifecycle import EventRecord
from drover_operator.domain.records import PendingEvent
from drover_operator.store.db import Connection, Pool, fetch_all

# A history-only line is recorded as already posted: it never enters the outbox.
INSERT_RUN_EVENT = """
INSERT INTO drover_run_events (run_id, attempt, type, reason, message, posted)
VALUES (%s, %s, %s, %s, %s, %s)
"""

INSERT_TASK_EVENT = """
INSERT INTO drover_task_events (namespace, task, task_uid, type, reason, message)
VALUES (%s, %s, %s, %s, %s, %s)
"""

# Oldest first across both tables. Run events name their TaskRun through the run's record.
UNPOSTED = """
(SELECT 'run' AS source, e.id, 'TaskRun' AS kind, r.namespace, r.name, r.id AS uid, e.at,
        e.type, e.reason, e.message
 FROM drover_run_events e JOIN drover_runs r ON r.id = e.run_id
 WHERE NOT e.posted ORDER BY e.id LIMIT %(limit)s)
UNION ALL
(SELECT 'task', id, 'Task', namespace, task, task_uid, at, type, reason, message
 FROM drover_task_events WHERE NOT posted ORDER BY id LIMIT %(limit)s)
ORDER BY at
"""

MARK_RUN_EVENTS = "UPDATE drover_run_events SET posted = true WHERE id = ANY(%s)"
MARK_TASK_EVENTS = "UPDATE drover_task_events SET posted = true WHERE id = ANY(%s)"


async def record_run_events(
    conn: Connection, run_id: str, events: Sequence[EventRecord], attempt: int | None = None
) -> None:
    """Add lines to a run's history (and the outbox), in the caller's transaction."""
    for event in events:
        await conn.execute(
            INSERT_RUN_EVENT,
            (
                run_id,
                event.attempt or attempt,
                event.type,
                event.reason,
                event.message,
                event.history_only,
            ),
        )


async def record_task_events(
    conn: Connection, namespace: str, task: str, task_uid: str, events: Sequence[EventRecord]
) -> None:
    for event in events:
        await conn.execute(
            INSERT_TASK_EVENT,
            (namespace, task, task_uid, event.type, event.reason, event.message[:1024]),
        )


class EventOutbox:
    """Events waiting to be posted, from both outbox tables."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def unposted(self, limit: int) -> list[PendingEvent]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, PendingEvent, UNPOSTED, {"limit": limit})

    async def mark_posted(self, events: Sequence[PendingEvent]) -> None:
        runs = [e.id for e in events if e.source == "run"]
        tasks = [e.id for e in events if e.source == "task"]
        async with self.pool.connection() as conn:
            if runs:
                await conn.execute(MARK_RUN_EVENTS, (runs,))
            if tasks:
                await conn.execute(MARK_TASK_EVENTS, (tasks,))
