"""What the run API reads and writes for an attempt: its context, checkpoints, heartbeats,
metadata and logs. Ending an attempt goes through `AttemptStore.finish`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from drover.protocol.wire import LogLine, StepRecord
from drover_operator.domain.records import ApiAttempt, LogRecord, StepValue
from drover_operator.store.db import Pool, fetch_all, fetch_one, transaction

API_ATTEMPT = """
SELECT a.run_id, a.number, a.try_number, a.active, a.token_hash, a.task_spec,
       a.heartbeat_timeout, r.namespace, r.name, r.task, r.execution AS current_execution,
       r.payload, r.metadata, r.scheduled_at, r.phase, r.cancel_requested
FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
WHERE a.run_id = %s AND a.number = %s
"""

RUN_STEPS = "SELECT seq, name, value FROM drover_steps WHERE run_id = %s ORDER BY seq"

RUN_STEP_NAMES = "SELECT seq, name, NULL AS value FROM drover_steps WHERE run_id = %s ORDER BY seq"

HEARTBEAT = """
UPDATE drover_attempts SET heartbeat_at = now()
WHERE run_id = %s AND number = %s AND active
"""

INSERT_STEP = """
INSERT INTO drover_steps (run_id, seq, name, value, attempt, started_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, seq) DO NOTHING
"""

# What is stored at each position of a batch, compared with what the batch sends (as jsonb:
# key order, spacing and number spelling do not matter).
STORED_STEPS = """
SELECT s.seq, s.name, s.value = v.value AS same_value
FROM unnest(%s::int[], %s::jsonb[]) WITH ORDINALITY AS v(seq, value, n)
JOIN drover_steps s ON s.run_id = %s AND s.seq = v.seq
ORDER BY v.n
"""

# Credential check and insert in one round trip. `name` and `same_value` are read from the
# statement's snapshot, taken before the insert: NULL when this statement inserted, and also
# when a concurrent statement inserted that position and committed after the snapshot (a
# retried request racing its own first try); then `STORED_STEP` reads it again.
PUT_STEP_CHECKED = """
WITH attempt AS (
    SELECT a.try_number FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
    WHERE a.run_id = %(run_id)s AND a.number = %(number)s AND a.active
      AND a.token_hash = %(token_hash)s AND r.execution = a.number
), inserted AS (
    INSERT INTO drover_steps (run_id, seq, name, value, attempt, started_at)
    SELECT %(run_id)s, %(seq)s, %(name)s, %(value)s, try_number, %(started_at)s FROM attempt
    ON CONFLICT (run_id, seq) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM attempt) AS authorized,
       EXISTS (SELECT 1 FROM inserted) AS inserted,
       s.seq, s.name, s.value = %(value)s AS same_value
FROM (SELECT 1) AS one
LEFT JOIN drover_steps s ON s.run_id = %(run_id)s AND s.seq = %(seq)s
"""

STORED_STEP = """
SELECT seq, name, value = %(value)s AS same_value FROM drover_steps
WHERE run_id = %(run_id)s AND seq = %(seq)s
"""

RUN_METADATA = "SELECT metadata FROM drover_runs WHERE id = %s"

PATCH_METADATA = """
UPDATE drover_runs
SET metadata = jsonb_strip_nulls(metadata || %s), version = version + 1
WHERE id = %s
RETURNING metadata
"""

INSERT_LOG = """
INSERT INTO drover_logs (run_id, attempt, at, level, logger, message)
VALUES (%s, %s, %s, %s, %s, %s)
"""

# `attempt` is the try a line's execution belongs to; `execution` the pod that logged it.
RUN_LOGS_PAGE = """
SELECT l.id, coalesce(a.try_number, l.attempt) AS attempt, l.attempt AS execution, l.at,
       l.level, l.logger, l.message
FROM drover_logs l
LEFT JOIN drover_attempts a ON a.run_id = l.run_id AND a.number = l.attempt
WHERE l.run_id = %(run_id)s AND l.id > %(after)s
  AND (%(attempt)s::int IS NULL OR a.try_number = %(attempt)s)
  AND (%(since)s::timestamptz IS NULL OR l.at >= %(since)s)
ORDER BY l.id LIMIT %(limit)s
"""


class StepConflictError(Exception):
    """A recorded position holds another step (the code path changed), or the same step with
    another value (a stored result cannot change)."""

    def __init__(self, record: StepRecord, stored: _StoredStep) -> None:
        if stored.name != record.name:
            message = (
                f"step #{record.seq} is {stored.name!r} in the run's history, not "
                f"{record.name!r}: the task's code path changed between attempts"
            )
        else:
            message = (
                f"step #{record.seq} {record.name!r} is recorded with another value: a stored "
                "result cannot change (a retried request must send the same value)"
            )
        super().__init__(message)


@dataclass(frozen=True)
class _StoredStep:
    """What is stored at a position, and whether it is what a request sends."""

    seq: int
    name: str
    same_value: bool

    def identical(self, record: StepRecord) -> bool:
        return self.name == record.name and self.same_value


@dataclass(frozen=True)
class _CheckedStep:
    authorized: bool
    inserted: bool
    seq: int | None
    name: str | None
    same_value: bool | None


@dataclass(frozen=True)
class _Metadata:
    metadata: dict[str, Any]


class RunApiStore:
    """The tables behind the run API: `drover_steps`, `drover_logs`, run metadata."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def attempt(self, run_id: str, number: int) -> ApiAttempt | None:
        async with self.pool.connection() as conn:
            return await fetch_one(conn, ApiAttempt, API_ATTEMPT, (run_id, number))

    async def steps(self, run_id: str) -> list[StepValue]:
        async with self.pool.connection() as conn:
            return await fetch_all(conn, StepValue, RUN_STEPS, (run_id,))

    async def step_names(self, run_id: str) -> list[StepValue]:
        """The run's steps without their values."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, StepValue, RUN_STEP_NAMES, (run_id,))

    async def heartbeat(self, run_id: str, number: int) -> bool:
        """Record a beat; False when the attempt is no longer active (the runner must stop)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(HEARTBEAT, (run_id, number))
            return cursor.rowcount == 1

    async def put_steps(self, run_id: str, try_number: int, batch: Sequence[StepRecord]) -> None:
        """Store checkpoints of the attempt (try) `try_number`. A position already holding the
        identical step (same name, same value) is a retried request: fine. Anything else
        there raises `StepConflictError`, and nothing of the batch is stored."""
        async with transaction(self.pool) as conn:
            for record in batch:
                await conn.execute(
                    INSERT_STEP,
                    (
                        run_id,
                        record.seq,
                        record.name,
                        Jsonb(record.value),
                        try_number,
                        record.started_at,
                    ),
                )
            # A new statement, so a concurrent request's committed insert is seen here. One
            # row per record (a batch may repeat a position), in the batch's order.
            params = ([r.seq for r in batch], [Jsonb(r.value) for r in batch], run_id)
            stored = await fetch_all(conn, _StoredStep, STORED_STEPS, params)
            for record, found in zip(batch, stored, strict=True):
                if not found.identical(record):
                    raise StepConflictError(record, found)

    async def put_step_checked(
        self, run_id: str, number: int, hashed_token: str, record: StepRecord
    ) -> bool:
        """Store one checkpoint if the token is the run's active attempt's, in one statement.

        True: stored, or the identical step was already stored (a retried request, also while
        its first try is still in flight). False: not stored, for want of an active attempt
        with this token; the caller finds out why. Raises `StepConflictError` when the
        position holds anything else.
        """
        params = {
            "run_id": run_id,
            "number": number,
            "token_hash": hashed_token,
            "seq": record.seq,
            "name": record.name,
            "value": Jsonb(record.value),
            "started_at": record.started_at,
        }
        async with self.pool.connection() as conn:
            row = await fetch_one(conn, _CheckedStep, PUT_STEP_CHECKED, params)
            if row is None or not row.authorized:
                return False
            if row.inserted:
                return True
            stored: _StoredStep | None = None
            if row.seq is not None and row.name is not None and row.same_value is not None:
                stored = _StoredStep(row.seq, row.name, row.same_value)
            else:  # inserted by a statement that committed after this one's snapshot
                stored = await fetch_one(conn, _StoredStep, STORED_STEP, params)
        if stored is None:  # gone again (the run's history was deleted)
            return False
        if stored.identical(record):
            return True
        raise StepConflictError(record, stored)

    async def metadata(self, run_id: str) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            row = await fetch_one(conn, _Metadata, RUN_METADATA, (run_id,))
        return row.metadata if row else {}

    async def patch_metadata(self, run_id: str, values: dict[str, Any]) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            row = await fetch_one(conn, _Metadata, PATCH_METADATA, (Jsonb(values), run_id))
        return row.metadata if row else {}

    async def append_logs(self, run_id: str, number: int, lines: Sequence[LogLine]) -> None:
        async with transaction(self.pool) as conn, conn.cursor() as cursor:
            await cursor.executemany(
                INSERT_LOG,
                [(run_id, number, ln.time, ln.level, ln.logger, ln.message) for ln in lines],
            )

    async def logs(
        self,
        run_id: str,
        after: int,
        limit: int,
        *,
        attempt: int | None = None,
        since: dt.datetime | None = None,
    ) -> list[LogRecord]:
        """Lines after line `after`, oldest first; of one attempt (try), from `since`."""
        params = {
            "run_id": run_id,
            "after": after,
            "limit": limit,
            "attempt": attempt,
            "since": since,
        }
        async with self.pool.connection() as conn:
            return await fetch_all(conn, LogRecord, RUN_LOGS_PAGE, params)
