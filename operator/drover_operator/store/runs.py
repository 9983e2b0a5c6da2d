"""Runs: recording TaskRuns, closing them (cancel, delete), expiring them, and what their
TaskRun status shows. Each method is one transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from drover.protocol.phases import FINISHED_PHASES, Phase
from drover_operator.domain.attempts import AttemptState
from drover_operator.domain.lifecycle import EventRecord
from drover_operator.domain.records import (
    AttemptRecord,
    AttemptSummary,
    RunEvent,
    RunRecord,
    RunRef,
    UnpushedRun,
)
from drover_operator.store.db import (
    Connection,
    Pool,
    fetch_all,
    fetch_one,
    notify,
    pipelined,
    sql_list,
    transaction,
)
from drover_operator.store.outbox import record_run_events

_FINISHED = sql_list(FINISHED_PHASES)

#: How long a replica may take to write a run's status it claimed.
PUSH_LEASE = dt.timedelta(seconds=60)

RUN_COLUMNS = """
r.id, r.namespace, r.name, r.task, r.generation, r.concurrency_key, r.priority, r.payload,
r.tags, r.phase, r.attempt, r.eligible_at, r.expires_at, r.created_at, r.recorded_at,
r.started_at, r.finished_at, r.reason, r.message, r.error, r.output, r.cancel_requested,
r.deleted_at, r.version, r.pushed_version, r.metadata, r.scheduled_at, r.wait_reason,
r.wait_message, r.execution, r.resume, r.waiting_for, r.parent_id, r.parent_name,
r.child_count
"""

ATTEMPT_COLUMNS = """
a.run_id, a.number, a.try_number, a.namespace, a.task, a.pod_name, a.state, a.active,
a.admitted_at, a.started_at, a.task_spec, a.finished_at
"""

INSERT_RUN = """
INSERT INTO drover_runs (id, namespace, name, task, generation, concurrency_key, priority,
                         payload, tags, phase, eligible_at, expires_at, created_at,
                         reason, message, finished_at, error, scheduled_at, metadata,
                         parent_id, parent_name, cancel_requested)
VALUES (%(id)s, %(namespace)s, %(name)s, %(task)s, %(generation)s, %(concurrency_key)s,
        %(priority)s, %(payload)s, %(tags)s, %(phase)s, %(eligible_at)s, %(expires_at)s,
        %(created_at)s, %(reason)s, %(message)s, %(finished_at)s, %(error)s, %(scheduled_at)s,
        %(metadata)s, %(parent_id)s, %(parent_name)s, %(cancel_requested)s)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

CANCEL_WAITPOINTS = """
UPDATE drover_waitpoints SET state = 'canceled', resolved_at = now()
WHERE run_id = %s AND state IN ('pending', 'waiting')
"""

CANCEL_RUN_TOKENS = """
UPDATE drover_tokens SET state = 'canceled', completed_at = now()
WHERE run_id = %s AND state = 'waiting'
"""

# A parent's status lists its children: a new child changes it.
ADD_CHILD = (
    "UPDATE drover_runs SET child_count = child_count + 1, version = version + 1 WHERE id = %s"
)

# Unfinished descendants of a run (children, their children, ...), deepest first.
UNFINISHED_DESCENDANTS = f"""
WITH RECURSIVE tree(id, depth) AS (
    SELECT id, 1 FROM drover_runs WHERE parent_id = %s
    UNION
    SELECT r.id, t.depth + 1 FROM drover_runs r JOIN tree t ON r.parent_id = t.id
    WHERE t.depth < 100
)
SELECT {RUN_COLUMNS} FROM drover_runs r JOIN tree t ON t.id = r.id
WHERE r.phase NOT IN ({_FINISHED})
ORDER BY t.depth DESC
FOR UPDATE OF r
"""

CHILD_NAMES = """
SELECT name FROM drover_runs WHERE parent_id = %s ORDER BY created_at, seq LIMIT %s
"""

LOCK_RUN = f"SELECT {RUN_COLUMNS} FROM drover_runs r WHERE r.id = %s FOR UPDATE"

ACTIVE_ATTEMPT = f"""
SELECT {ATTEMPT_COLUMNS} FROM drover_attempts a WHERE a.run_id = %s AND a.active FOR UPDATE
"""

END_ATTEMPT = """
UPDATE drover_attempts
SET state = %(state)s, active = false, finished_at = COALESCE(finished_at, now()),
    exit_code = %(exit_code)s, reason = %(reason)s, message = %(message)s,
    kill_requested = %(kill)s, kill_grace = %(kill_grace)s
WHERE run_id = %(run_id)s AND number = %(number)s
"""

FINISH_RUN = """
UPDATE drover_runs
SET phase = %(phase)s, finished_at = now(), reason = %(reason)s, message = %(message)s,
    error = %(error)s, cancel_requested = cancel_requested OR %(cancel)s,
    deleted_at = COALESCE(deleted_at, %(deleted_at)s), version = version + 1
WHERE id = %(id)s
"""

MARK_DELETED = """
UPDATE drover_runs SET deleted_at = now() WHERE id = %s AND deleted_at IS NULL
"""

EXPIRE_RUNS = f"""
UPDATE drover_runs r
SET phase = 'Expired', finished_at = now(), reason = 'Expired',
    message = 'not started within its ttl', version = version + 1
WHERE phase = 'Queued' AND attempt = 0 AND NOT cancel_requested AND expires_at <= now()
RETURNING {RUN_COLUMNS}
"""

# Claimed under a lease, so that one replica at a time writes a run's status (in version
# order); a replica that dies holding leases delays those runs' status by the lease. The
# claimed ids are an array, so the update finds them by primary key (`IN (subquery)` was
# planned as a hash join over a sequential scan of every run).
CLAIM_UNPUSHED = f"""
WITH claimed AS (
    UPDATE drover_runs SET push_lease_until = now() + %(lease)s::interval
    WHERE id = ANY(ARRAY(
        SELECT id FROM drover_runs
        WHERE version > pushed_version
          AND (push_lease_until IS NULL OR push_lease_until < now())
        ORDER BY version - pushed_version DESC
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED))
    RETURNING *
)
SELECT {RUN_COLUMNS}, (t.name IS NOT NULL) AS task_exists, t.invalid AS task_invalid
FROM claimed r
LEFT JOIN drover_tasks t ON t.namespace = r.namespace AND t.name = r.task
ORDER BY r.version - r.pushed_version DESC
"""

RELEASE_PUSH = "UPDATE drover_runs SET push_lease_until = NULL WHERE id = %s"

RUN_ATTEMPTS = """
SELECT number, try_number, pod_name, state, admitted_at, started_at, finished_at, exit_code,
       reason, message
FROM drover_attempts WHERE run_id = %s ORDER BY number DESC LIMIT %s
"""

# Unfinished runs whose TaskRun may have been deleted unseen (created before a listing began).
UNFINISHED_BEFORE = f"""
SELECT id, namespace, name FROM drover_runs
WHERE phase NOT IN ({_FINISHED}) AND deleted_at IS NULL AND created_at < %(before)s
  AND (%(namespaces)s::text[] IS NULL OR namespace = ANY(%(namespaces)s::text[]))
"""

# Runs whose TaskRun exists, newest first: what a starting operator already knows, so that
# replaying every TaskRun of its first listing needs no transaction per run.
KNOWN_RUNS = f"""
SELECT id::text AS id, phase IN ({_FINISHED}) AS finished FROM drover_runs
WHERE deleted_at IS NULL ORDER BY created_at DESC LIMIT %s
"""

# The latest attempts of several runs at once (newest first within each run).
RUNS_ATTEMPTS = """
SELECT run_id, number, try_number, pod_name, state, admitted_at, started_at, finished_at,
       exit_code, reason, message
FROM (SELECT a.*, row_number() OVER (PARTITION BY run_id ORDER BY number DESC) AS newer
      FROM drover_attempts a WHERE run_id = ANY(%s::uuid[])) latest
WHERE newer <= %s ORDER BY run_id, number DESC
"""

MARK_PUSHED = """
UPDATE drover_runs SET pushed_version = greatest(pushed_version, %s), push_lease_until = NULL
WHERE id = %s
"""

# The newest run of that name: a TaskRun deleted and created again is a new run.
RUN_BY_NAME = f"""
SELECT {RUN_COLUMNS} FROM drover_runs r WHERE r.namespace = %s AND r.name = %s
ORDER BY r.created_at DESC LIMIT 1
"""

RUN_EVENTS = """
SELECT at, attempt, type, reason, message FROM drover_run_events
WHERE run_id = %s ORDER BY id
"""


@dataclass(frozen=True)
class NewRun:
    """A TaskRun as first seen, to be recorded."""

    id: str
    namespace: str
    name: str
    task: str
    generation: int
    created_at: dt.datetime
    concurrency_key: str | None = None
    priority: int = 0
    payload: Any = None
    tags: dict[str, str] | None = None
    eligible_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    scheduled_at: dt.datetime | None = None
    #: Initial run metadata (given when triggered through the API).
    metadata: dict[str, Any] | None = None
    #: (reason, message) when the run is refused at once (a payload its Task's schema refuses).
    failed: tuple[str, str] | None = None
    #: The run that started this one (its TaskRun's owner), for child runs.
    parent_id: str | None = None
    parent_name: str | None = None
    #: spec.cancel was already true when the TaskRun was first seen: recorded as canceling,
    #: so admission never takes it in the moment before the close that follows.
    cancel_requested: bool = False


@dataclass(frozen=True)
class KnownRun:
    """A recorded run, and whether it is over (nothing can change it any more)."""

    id: str
    finished: bool


@dataclass(frozen=True)
class Closed:
    """A run that a close ended: its record before, and the attempt that gave up its slot."""

    run: RunRecord
    attempt: AttemptRecord | None


class RunStore:
    """The `drover_runs` table: one row per TaskRun (keyed by its UID), its phase and result."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def record(self, run: NewRun) -> bool:
        """Record a TaskRun once; False when it was already recorded."""
        phase, reason, message, error, finished = Phase.QUEUED, None, None, None, None
        if run.failed is not None:
            phase, (reason, message) = Phase.FAILED, run.failed
            error = Jsonb({"type": reason, "message": message, "retryable": False})
            finished = dt.datetime.now(dt.UTC)
        async with pipelined(self.pool) as conn:
            cursor = await conn.execute(
                INSERT_RUN,
                {
                    "id": run.id,
                    "namespace": run.namespace,
                    "name": run.name,
                    "task": run.task,
                    "generation": run.generation,
                    "concurrency_key": run.concurrency_key,
                    "priority": run.priority,
                    "payload": Jsonb(run.payload),
                    "tags": Jsonb(run.tags) if run.tags else None,
                    "phase": phase.value,
                    "eligible_at": run.eligible_at,
                    "expires_at": run.expires_at,
                    "created_at": run.created_at,
                    "reason": reason,
                    "message": message,
                    "finished_at": finished,
                    "error": error,
                    "scheduled_at": run.scheduled_at,
                    "metadata": Jsonb(run.metadata or {}),
                    "parent_id": run.parent_id,
                    "parent_name": run.parent_name,
                    "cancel_requested": run.cancel_requested,
                },
            )
            if await cursor.fetchone() is None:  # the one round trip before the commit
                return False
            if run.parent_id is not None:
                await conn.execute(ADD_CHILD, (run.parent_id,))
            if run.failed is not None:
                event = EventRecord("Warning", reason or "Failed", message or "")
            else:
                event = EventRecord("Normal", "Queued", f"queued for Task {run.task}")
                await notify(conn, f"{run.namespace}/{run.task}")
            await record_run_events(conn, run.id, [event])
        return True

    async def close(
        self, run_id: str, *, reason: str, message: str, deleted: bool
    ) -> Closed | None:
        """Cancel a run (spec.cancel, or its TaskRun deleted): a queued or waiting run never
        starts again, an active attempt gives up its slot now and its pod is stopped, and
        its unfinished child runs (and theirs) are canceled with it. None if already over."""
        async with transaction(self.pool) as conn:
            run = await fetch_one(conn, RunRecord, LOCK_RUN, (run_id,))
            if run is None:
                return None
            if run.phase in FINISHED_PHASES:
                if deleted:
                    await conn.execute(MARK_DELETED, (run_id,))
                return None
            attempt = await _cancel(conn, run, reason, message, deleted=deleted)
            cascade = f"its parent {run.name} was canceled"
            for child in await fetch_all(conn, RunRecord, UNFINISHED_DESCENDANTS, (run_id,)):
                await _cancel(conn, child, "ParentCanceled", cascade, deleted=False)
            await notify(conn, f"{run.namespace}/{run.task}")
        return Closed(run, attempt)

    async def expire(self) -> list[RunRecord]:
        """Runs whose `ttl` passed before any attempt started: Expired."""
        async with transaction(self.pool) as conn:
            expired = await fetch_all(conn, RunRecord, EXPIRE_RUNS)
            for run in expired:
                event = EventRecord("Warning", "Expired", "not started within its ttl")
                await record_run_events(conn, run.id, [event])
        return expired

    # -- TaskRun status ----------------------------------------------------------------------

    async def unpushed(self, limit: int) -> list[UnpushedRun]:
        """Runs whose TaskRun status is behind their record, most behind first."""
        async with self.pool.connection() as conn:
            return await fetch_all(
                conn, UnpushedRun, CLAIM_UNPUSHED, {"limit": limit, "lease": PUSH_LEASE}
            )

    async def attempts(self, run_id: str, limit: int) -> list[AttemptSummary]:
        """The run's latest attempts, newest first."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, AttemptSummary, RUN_ATTEMPTS, (run_id, limit))

    async def attempts_of(self, run_ids: list[str], limit: int) -> dict[str, list[AttemptSummary]]:
        """The latest attempts of each run, newest first: one query for a batch of runs."""
        found: dict[str, list[AttemptSummary]] = {}
        if not run_ids:
            return found
        async with self.pool.connection() as conn:
            cursor = await conn.execute(RUNS_ATTEMPTS, (run_ids, limit))
            for row in await cursor.fetchall():
                run_id = str(row.pop("run_id"))
                found.setdefault(run_id, []).append(AttemptSummary(**row))
        return found

    async def child_names(self, run_id: str, limit: int) -> list[str]:
        """The run's children, oldest first."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(CHILD_NAMES, (run_id, limit))
            return [row["name"] for row in await cursor.fetchall()]

    async def mark_pushed(self, run_id: str, version: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(MARK_PUSHED, (version, run_id))

    async def known(self, limit: int) -> list[KnownRun]:
        """Up to `limit` runs whose TaskRun exists, newest first, and whether each is over."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, KnownRun, KNOWN_RUNS, (limit,))

    async def unfinished_before(
        self, before: dt.datetime, namespaces: list[str] | None
    ) -> list[RunRef]:
        """Unfinished runs created before `before` (in `namespaces`, None: all)."""
        async with self.pool.connection() as conn:
            return await fetch_all(
                conn, RunRef, UNFINISHED_BEFORE, {"before": before, "namespaces": namespaces}
            )

    async def mark_pushed_many(self, pushed: list[tuple[str, int]]) -> None:
        """Several runs' statuses written, (run id, version) each, over one connection: one
        autocommitted statement per run, as `mark_pushed`. A single UPDATE of them all held
        every row's lock to its end and deadlocked with transactions locking the same runs in
        another order (admission, a finishing attempt)."""
        if not pushed:
            return
        async with self.pool.connection() as conn:
            for run_id, version in pushed:
                await conn.execute(MARK_PUSHED, (version, run_id))

    async def release_push(self, run_id: str) -> None:
        """Give up a claimed push that failed: another pass (or replica) retries it."""
        async with self.pool.connection() as conn:
            await conn.execute(RELEASE_PUSH, (run_id,))

    # -- reads -------------------------------------------------------------------------------

    async def by_name(self, namespace: str, name: str) -> RunRecord | None:
        async with self.pool.connection() as conn:
            return await fetch_one(conn, RunRecord, RUN_BY_NAME, (namespace, name))

    async def events(self, run_id: str) -> list[RunEvent]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, RunEvent, RUN_EVENTS, (run_id,))


async def _cancel(
    conn: Connection, run: RunRecord, reason: str, message: str, *, deleted: bool
) -> AttemptRecord | None:
    """End a locked, unfinished run as Canceled, in the caller's transaction: its active
    execution (if any) is stopped, its pending waits and tokens canceled."""
    attempt = await fetch_one(conn, AttemptRecord, ACTIVE_ATTEMPT, (run.id,))
    if attempt is not None:
        await conn.execute(
            END_ATTEMPT,
            {
                "run_id": run.id,
                "number": attempt.number,
                "state": AttemptState.CANCELED.value,
                "exit_code": None,
                "reason": reason,
                "message": message,
                "kill": True,
                "kill_grace": None,
            },
        )
    await conn.execute(
        FINISH_RUN,
        {
            "id": run.id,
            "phase": Phase.CANCELED.value,
            "reason": reason,
            "message": message,
            "error": None,
            "cancel": True,
            "deleted_at": dt.datetime.now(dt.UTC) if deleted else None,
        },
    )
    await conn.execute(CANCEL_WAITPOINTS, (run.id,))
    await conn.execute(CANCEL_RUN_TOKENS, (run.id,))
    event = EventRecord("Normal", reason, message, run.attempt or None)
    await record_run_events(conn, run.id, [event])
    return attempt
