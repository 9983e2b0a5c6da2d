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

STEP_NAMES = "SELECT seq, name FROM drover_steps WHERE run_id = %s AND seq = ANY(%s)"

# Credential check and insert in one round trip. `existing` is read from the snapshot before
# the insert, so it is the previously recorded name (NULL when this statement inserted).
PUT_STEP_CHECKED = """
WITH attempt AS (
    SELECT a.try_number FROM drover_attempts a JOIN drover_runs r ON r.id = a.run_id
    WHERE a.run_id = %(run_id)s AND a.number = %(number)s AND a.active
      AND a.token_hash = %(token_hash)s AND r.execution = a.number
), inserted AS (
    INSERT INTO drover_steps (run_id, seq, name, value, attempt, started_at)
    SELECT %(run_id)s, %(seq)s, %(name)s, %(value)s, attempt.try_number, %(started_at)s
    FROM attempt
    ON CONFLICT (run_id, seq) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM attempt) AS authorized,
       EXISTS (SELECT 1 FROM inserted) AS inserted,
       (SELECT name FROM drover_steps WHERE run_id = %(run_id)s AND seq = %(seq)s) AS existing
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
    """A step at a recorded position has another name: the code path changed."""

    def __init__(self, seq: int, recorded: str, called: str) -> None:
        super().__init__(
            f"step #{seq} is {recorded!r} in the run's history, not {called!r}: the task's "
            "code path changed between attempts"
        )


@dataclass(frozen=True)
class _CheckedStep:
    authorized: bool
    inserted: bool
    existing: str | None


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
        """Store checkpoints of the attempt (try) `try_number`; an existing one with the same
        name is kept (a retried request)."""
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
            cursor = await conn.execute(STEP_NAMES, (run_id, [r.seq for r in batch]))
            stored = {row["seq"]: row["name"] for row in await cursor.fetchall()}
            for record in batch:
                if stored.get(record.seq) != record.name:
                    raise StepConflictError(record.seq, stored.get(record.seq, "?"), record.name)

    async def put_step_checked(
        self, run_id: str, number: int, hashed_token: str, record: StepRecord
    ) -> bool | str | None:
        """Store one checkpoint if the token is the run's active attempt's, in one statement.

        True: stored (or already stored under the same name). A string: the name recorded at
        that position (non-determinism). None: not authorized; the caller finds out why.
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
            return None
        if row.inserted or row.existing == record.name:
            return True
        return str(row.existing)

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
