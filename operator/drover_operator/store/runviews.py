"""Reading the run history: runs listed newest first with filters and keyset pages, and a
waiting run's place in its queue. Includes runs whose TaskRun was already cleaned up."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from drover_operator.domain.records import RunRecord
from drover_operator.store.db import Pool, fetch_all, fetch_value
from drover_operator.store.runs import RUN_COLUMNS


@dataclass(frozen=True)
class RunFilter:
    """What to list; every field narrows the list (None: any; namespace None: all)."""

    namespace: str | None
    task: str | None = None
    phases: tuple[str, ...] = ()
    #: Tags the run must carry (key -> value; value None: any value).
    tags: dict[str, str | None] = field(default_factory=dict)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    #: Child runs of this run (its id).
    parent_id: str | None = None
    #: A run id, or a part of the run's name.
    search: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last run's creation time and id (runs are newest first)."""

    created_at: dt.datetime
    id: str


# Waiting runs of the same Task ahead of this one: higher priority, or equal and older.
QUEUE_POSITION = """
SELECT count(*) FROM drover_runs w
WHERE w.namespace = %(namespace)s AND w.task = %(task)s
  AND w.phase IN ('Queued', 'Retrying') AND NOT w.cancel_requested
  AND (w.eligible_at IS NULL OR w.eligible_at <= now())
  AND (w.priority > %(priority)s
       OR (w.priority = %(priority)s AND (w.created_at, w.seq) < (%(created_at)s, %(seq)s)))
"""

RUN_SEQ = "SELECT seq FROM drover_runs WHERE id = %s"


def _list_query(where: list[str]) -> str:
    return (
        f"SELECT {RUN_COLUMNS} FROM drover_runs r WHERE {' AND '.join(where)}"
        " ORDER BY r.created_at DESC, r.id DESC LIMIT %(limit)s"
    )


class RunViewStore:
    """Queries behind the run history API and the dashboard."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def list(
        self, where: RunFilter, limit: int, after: Cursor | None = None
    ) -> list[RunRecord]:
        """Runs matching `where`, newest first, after `after` (a page's last run)."""
        clauses = ["true"]
        params: dict[str, Any] = {"limit": limit}
        if where.namespace is not None:
            clauses.append("r.namespace = %(namespace)s")
            params["namespace"] = where.namespace
        if where.parent_id is not None:
            clauses.append("r.parent_id = %(parent_id)s")
            params["parent_id"] = where.parent_id
        if where.task is not None:
            clauses.append("r.task = %(task)s")
            params["task"] = where.task
        if where.phases:
            clauses.append("r.phase = ANY(%(phases)s)")
            params["phases"] = list(where.phases)
        exact = {k: v for k, v in where.tags.items() if v is not None}
        if exact:
            clauses.append("r.tags @> %(tags)s")
            params["tags"] = Jsonb(exact)
        for i, key in enumerate(k for k, v in where.tags.items() if v is None):
            clauses.append(f"r.tags ? %(tag_key_{i})s")
            params[f"tag_key_{i}"] = key
        if where.since is not None:
            clauses.append("r.created_at >= %(since)s")
            params["since"] = where.since
        if where.until is not None:
            clauses.append("r.created_at < %(until)s")
            params["until"] = where.until
        if where.search:
            try:
                params["search_id"] = str(uuid.UUID(where.search))
                clauses.append("r.id = %(search_id)s")
            except ValueError:
                clauses.append("strpos(r.name, %(search)s) > 0")
                params["search"] = where.search
        if after is not None:
            clauses.append("(r.created_at, r.id) < (%(after_at)s, %(after_id)s::uuid)")
            params.update(after_at=after.created_at, after_id=after.id)
        async with self.pool.connection() as conn:
            return await fetch_all(conn, RunRecord, _list_query(clauses), params)

    async def queue_position(self, run: RunRecord) -> int:
        """How many waiting runs of its Task are ahead of `run` (0: next in line)."""
        async with self.pool.connection() as conn:
            seq = await fetch_value(conn, RUN_SEQ, (run.id,))
            ahead = await fetch_value(
                conn,
                QUEUE_POSITION,
                {
                    "namespace": run.namespace,
                    "task": run.task,
                    "priority": run.priority,
                    "created_at": run.created_at,
                    "seq": seq,
                },
            )
        return int(ahead or 0)
