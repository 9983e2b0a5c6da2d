"""Store operations behind the run API: everything an attempt reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from drover._wire import LogLine, StepRecord
from drover_operator.store import queries as q
from drover_operator.store.db import transaction
from drover_operator.store.runs import Store


@dataclass(frozen=True)
class AttemptRow:
    run_id: str
    number: int
    active: bool
    current: bool
    token_hash: str | None
    row: dict[str, Any]


class StepConflictError(Exception):
    """A step at a recorded position has another name: the code path changed."""

    def __init__(self, seq: int, recorded: str, called: str) -> None:
        super().__init__(
            f"step #{seq} is {recorded!r} in the run's history, not {called!r}: the task's "
            "code path changed between attempts"
        )


async def attempt(store: Store, run_id: str, number: int) -> AttemptRow | None:
    rows = await store.fetch(q.API_ATTEMPT, (run_id, number))
    if not rows:
        return None
    row = rows[0]
    return AttemptRow(
        run_id=str(row["run_id"]),
        number=row["number"],
        active=row["active"],
        current=row["current_attempt"] == row["number"],
        token_hash=row["token_hash"],
        row=row,
    )


async def steps(store: Store, run_id: str) -> list[dict[str, Any]]:
    return await store.fetch(q.RUN_STEPS, (run_id,))


async def heartbeat(store: Store, run_id: str, number: int) -> bool:
    """Record a beat; False when the attempt is no longer active (the runner must stop)."""
    async with store.pool.connection() as conn:
        cursor = await conn.execute(q.HEARTBEAT, (run_id, number))
        return cursor.rowcount == 1


async def put_steps(store: Store, run_id: str, number: int, batch: list[StepRecord]) -> None:
    """Store checkpoints; an existing one with the same name is kept (a retried request)."""
    async with transaction(store.pool) as conn:
        for record in batch:
            await conn.execute(
                q.INSERT_STEP, (run_id, record.seq, record.name, Jsonb(record.value), number)
            )
        seqs = [r.seq for r in batch]
        stored = {
            row["seq"]: row["name"]
            for row in await (await conn.execute(q.STEP_NAMES, (run_id, seqs))).fetchall()
        }
        for record in batch:
            if stored.get(record.seq) != record.name:
                raise StepConflictError(record.seq, stored.get(record.seq, "?"), record.name)


async def put_step_fast(
    store: Store, run_id: str, number: int, hashed_token: str, record: StepRecord
) -> bool | str | None:
    """Store one checkpoint if the token is the run's active attempt's, in one statement.

    True: stored (or already stored under the same name). A string: the name recorded at
    that position (non-determinism). None: not authorized; the caller finds out why.
    """
    async with store.pool.connection() as conn:
        row = await (
            await conn.execute(
                q.PUT_STEP_FAST,
                {
                    "run_id": run_id,
                    "number": number,
                    "token_hash": hashed_token,
                    "seq": record.seq,
                    "name": record.name,
                    "value": Jsonb(record.value),
                },
            )
        ).fetchone()
    if row is None or not row["authorized"]:
        return None
    if row["inserted"] or row["existing"] == record.name:
        return True
    return str(row["existing"])


async def metadata(store: Store, run_id: str) -> dict[str, Any]:
    rows = await store.fetch(q.RUN_METADATA, (run_id,))
    result: dict[str, Any] = rows[0]["metadata"] if rows else {}
    return result


async def patch_metadata(store: Store, run_id: str, values: dict[str, Any]) -> dict[str, Any]:
    async with store.pool.connection() as conn:
        row = await (await conn.execute(q.PATCH_METADATA, (Jsonb(values), run_id))).fetchone()
    return row["metadata"] if row else {}


async def append_logs(store: Store, run_id: str, number: int, lines: list[LogLine]) -> None:
    async with transaction(store.pool) as conn, conn.cursor() as cursor:
        await cursor.executemany(
            q.INSERT_LOG,
            [(run_id, number, line.time, line.level, line.logger, line.message) for line in lines],
        )
