"""Attempts: started, ended (and what that means for the run, in the same transaction), their
pods to create and stop, and the deadlines the loop enforces."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from drover.protocol.phases import Phase
from drover_operator.domain.attempts import Outcome
from drover_operator.domain.lifecycle import EventRecord, RunEnd
from drover_operator.domain.records import (
    AttemptRecord,
    DueAttempt,
    HeldSlot,
    PodCreated,
    PodToCreate,
    PodToStop,
    RunRecord,
)
from drover_operator.store.db import (
    Pool,
    fetch_all,
    fetch_one,
    fetch_two,
    fetch_value,
    notify,
    pipelined,
    transaction,
)
from drover_operator.store.outbox import record_run_events
from drover_operator.store.runs import ATTEMPT_COLUMNS, END_ATTEMPT, FINISH_RUN, LOCK_RUN

LOCK_ATTEMPT = f"""
SELECT {ATTEMPT_COLUMNS} FROM drover_attempts a WHERE a.run_id = %s AND a.number = %s FOR UPDATE
"""

MARK_RUNNING = """
UPDATE drover_attempts
SET state = 'Running', pod_created = true,
    -- Container start times have one-second resolution; an attempt cannot start before it
    -- was admitted, so the admission time bounds the truncation.
    started_at = GREATEST(%(started_at)s::timestamptz, admitted_at),
    deadline_at = GREATEST(%(started_at)s::timestamptz, admitted_at) + max_duration
WHERE run_id = %(run_id)s AND number = %(number)s AND state = 'Admitted' AND active
RETURNING started_at
"""

RUN_STARTED = """
UPDATE drover_runs
SET phase = 'Running', started_at = COALESCE(started_at, %s), version = version + 1
WHERE id = %s AND phase = 'Starting'
"""

SET_OUTPUT = "UPDATE drover_runs SET output = %s WHERE id = %s"

# Retry times come from Postgres' clock, the one admission compares them with.
RETRY_RUN = """
UPDATE drover_runs
SET phase = 'Retrying', eligible_at = now() + %(retry_in)s::interval, reason = %(reason)s,
    message = %(message)s, error = %(error)s, version = version + 1
WHERE id = %(id)s
"""

ATTEMPT_TASK_SPEC = "SELECT task_spec FROM drover_attempts WHERE run_id = %s AND number = %s"

PODS_TO_CREATE = """
SELECT a.run_id, a.number, a.try_number, a.max_duration, a.pod_name, a.task_spec,
       r.namespace, r.name, r.task
FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
WHERE a.active AND a.state = 'Admitted' AND NOT a.pod_created
ORDER BY a.admitted_at
LIMIT %s
"""

# One statement for a pass's pods: a commit (an fsync) each cost the burst more than the
# marks are worth. A crash before it only means the next pass meets AlreadyExists and adopts.
MARK_PODS_CREATED = """
UPDATE drover_attempts a SET pod_created = true
FROM drover_runs r, unnest(%s::uuid[], %s::int[]) AS created(run_id, number)
WHERE a.run_id = created.run_id AND a.number = created.number AND r.id = a.run_id
  AND NOT a.pod_created
RETURNING a.run_id, a.number, extract(epoch FROM now() - r.created_at)::float8 AS latency
"""

PODS_TO_STOP = """
SELECT a.run_id, a.number, a.pod_name, a.kill_grace, r.namespace
FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
WHERE a.kill_requested LIMIT %s
"""

POD_STOPPED = "UPDATE drover_attempts SET kill_requested = false WHERE run_id = %s AND number = %s"

# The pod of an attempt of a `slotRelease: PodGone` Task is gone: its slot is free (if the
# attempt has ended too; while it is active, `active` holds the slot).
RELEASE_POD_SLOT = """
UPDATE drover_attempts SET holds_pod = false
WHERE run_id = %s AND number = %s AND holds_pod
RETURNING namespace || '/' || task
"""

# Ended attempts whose pod was not yet seen gone, ended long enough ago that a pod creation
# still in flight when they ended has landed (or never will).
HELD_SLOTS = """
SELECT run_id, number, namespace, pod_name FROM drover_attempts
WHERE holds_pod AND NOT active AND finished_at <= now() - %s::interval
ORDER BY finished_at
LIMIT %s
"""

_DUE = "SELECT a.run_id, a.number, a.pod_name, r.namespace, a.heartbeat_timeout"
_FROM = "FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id"

DUE_PENDING = f"""
{_DUE} {_FROM}
WHERE a.active AND a.state = 'Admitted' AND a.pending_deadline_at <= now()
LIMIT %s
"""

DUE_STALLS = f"""
{_DUE} {_FROM}
WHERE a.active AND a.state = 'Running' AND a.heartbeat_timeout IS NOT NULL
  AND GREATEST(coalesce(a.heartbeat_at, a.started_at), a.started_at)
      < now() - a.heartbeat_timeout
LIMIT %s
"""

DUE_DEADLINES = f"""
{_DUE} {_FROM}
WHERE a.active AND a.state = 'Running' AND a.deadline_at <= now()
LIMIT %s
"""

#: Decides what an ended attempt means for its run (the run lifecycle's rules).
EndDecider = Callable[[RunRecord, AttemptRecord, Outcome], RunEnd]


@dataclass(frozen=True)
class AttemptEnded:
    """What `finish` committed: the run and attempt as they were, and the decision."""

    run: RunRecord
    attempt: AttemptRecord
    outcome: Outcome
    end: RunEnd


class AttemptStore:
    """The `drover_attempts` table: one row per attempt, holding a slot while `active`."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def running(self, run_id: str, number: int, started_at: dt.datetime) -> bool:
        """The attempt's container started: Running, and its maxDuration deadline set."""
        async with pipelined(self.pool) as conn:
            attempt = await fetch_one(conn, AttemptRecord, LOCK_ATTEMPT, (run_id, number))
            if attempt is None or attempt.state != "Admitted" or not attempt.active:
                return False
            started = await fetch_value(
                conn,
                MARK_RUNNING,
                {"run_id": run_id, "number": number, "started_at": started_at},
            )
            await conn.execute(RUN_STARTED, (started, run_id))
            event = EventRecord(
                "Normal", "Started", f"attempt {number} started in pod {attempt.pod_name}", number
            )
            await record_run_events(conn, run_id, [event])
            return True

    async def finish(
        self,
        run_id: str,
        number: int,
        outcome: Outcome,
        decide: EndDecider,
        *,
        kill: bool = False,
        kill_grace: int | None = None,
    ) -> AttemptEnded | None:
        """End an active attempt and record what `decide` makes of it (retry or finish),
        in one transaction; None if the attempt had already ended (a replayed event,
        another replica). Pipelined: the locks are one round trip, the writes and the
        commit another (a slot's turnover waits on this)."""
        async with pipelined(self.pool) as conn:
            run, attempt = await fetch_two(
                conn,
                (RunRecord, LOCK_RUN, (run_id,)),
                (AttemptRecord, LOCK_ATTEMPT, (run_id, number)),
            )
            if run is None or attempt is None or not attempt.active:
                return None
            end = decide(run, attempt, outcome)
            await conn.execute(
                END_ATTEMPT,
                {
                    "run_id": run_id,
                    "number": number,
                    "state": outcome.state.value,
                    "exit_code": outcome.exit_code,
                    "reason": outcome.reason,
                    "message": outcome.message,
                    "kill": kill,
                    "kill_grace": kill_grace,
                },
            )
            if outcome.output is not None:
                await conn.execute(SET_OUTPUT, (Jsonb(outcome.output), run_id))
            error = Jsonb(end.error) if end.error is not None else None
            if end.phase == Phase.RETRYING:
                await conn.execute(
                    RETRY_RUN,
                    {
                        "id": run_id,
                        "retry_in": end.retry_in,
                        "reason": outcome.reason,
                        "message": outcome.message,
                        "error": error,
                    },
                )
            else:
                await conn.execute(
                    FINISH_RUN,
                    {
                        "id": run_id,
                        "phase": end.phase.value,
                        "reason": outcome.reason,
                        "message": outcome.message,
                        "error": error,
                        "cancel": False,
                        "deleted_at": None,
                    },
                )
            await record_run_events(conn, run_id, end.events, number)
            await notify(conn, f"{run.namespace}/{run.task}")
        return AttemptEnded(run, attempt, outcome, end)

    async def task_spec(self, run_id: str, number: int) -> dict[str, Any] | None:
        """The Task spec the attempt was admitted with."""
        async with self.pool.connection() as conn:
            spec: dict[str, Any] | None = await fetch_value(
                conn, ATTEMPT_TASK_SPEC, (run_id, number)
            )
            return spec

    # -- pods ----------------------------------------------------------------------------------

    async def pods_to_create(self, limit: int) -> list[PodToCreate]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, PodToCreate, PODS_TO_CREATE, (limit,))

    async def pods_created(self, attempts: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
        """Mark these attempts' pods created; for each marked the first time, seconds since
        its TaskRun was created."""
        if not attempts:
            return {}
        async with self.pool.connection() as conn:
            rows = await fetch_all(
                conn,
                PodCreated,
                MARK_PODS_CREATED,
                ([run_id for run_id, _ in attempts], [number for _, number in attempts]),
            )
        return {(row.run_id, row.number): row.latency for row in rows}

    async def pods_to_stop(self, limit: int) -> list[PodToStop]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, PodToStop, PODS_TO_STOP, (limit,))

    async def pod_stopped(self, run_id: str, number: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(POD_STOPPED, (run_id, number))

    async def pod_gone(self, run_id: str, number: int) -> bool:
        """The attempt's pod terminated or was deleted; True if that freed a slot held for
        it (`slotRelease: PodGone`), which admission is then told of."""
        async with transaction(self.pool) as conn:
            queue = await fetch_value(conn, RELEASE_POD_SLOT, (run_id, number))
            if queue is None:
                return False
            await notify(conn, queue)
            return True

    async def held_slots(self, settled: dt.timedelta, limit: int) -> list[HeldSlot]:
        """Ended attempts still holding a slot for a pod, ended at least `settled` ago."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, HeldSlot, HELD_SLOTS, (settled, limit))

    # -- deadlines -----------------------------------------------------------------------------

    async def due_pending(self, limit: int) -> list[DueAttempt]:
        """Attempts whose pod has not started within `timeouts.pending`."""
        return await self._due(DUE_PENDING, limit)

    async def due_stalls(self, limit: int) -> list[DueAttempt]:
        """SDK attempts whose last heartbeat (by Postgres' clock) is older than their
        `timeouts.heartbeat`."""
        return await self._due(DUE_STALLS, limit)

    async def due_deadlines(self, limit: int) -> list[DueAttempt]:
        """Running attempts past `timeouts.maxDuration`."""
        return await self._due(DUE_DEADLINES, limit)

    async def _due(self, query: str, limit: int) -> list[DueAttempt]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, DueAttempt, query, (limit,))
