"""Durable waits: waitpoints, suspending a run on one (its execution ends and frees its
slot), and resolving them (the run is queued again).

A waitpoint is created the first time the code reaches its position, so a retried or resumed
run never restarts a timer. It resolves once: its result is recorded as the position's step,
which is what the resumed code replays. Resolution is level-triggered — the resolver looks
at what is true now, on every pass — so a child finishing while its parent suspends is never
missed: the suspending transaction notifies, and the next pass sees both.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg.types.json import Jsonb

from drover.protocol.phases import FINISHED_PHASES
from drover_operator.domain.attempts import AttemptState
from drover_operator.domain.lifecycle import EventRecord
from drover_operator.domain.records import AttemptRecord, RunRecord, StepValue
from drover_operator.domain.waits import (
    AwaitedRun,
    Resumed,
    TokenRecord,
    Waited,
    WaitKind,
    Waitpoint,
    runs_value,
    suspend_message,
    token_value,
    wait_step,
    waiting_for,
)
from drover_operator.errors import RequestError
from drover_operator.store.db import (
    Connection,
    Pool,
    fetch_all,
    fetch_one,
    fetch_value,
    notify,
    sql_list,
    transaction,
)
from drover_operator.store.outbox import record_run_events
from drover_operator.store.runs import ATTEMPT_COLUMNS, END_ATTEMPT, LOCK_RUN
from drover_operator.store.tokens import TOKEN, time_out_tokens

_FINISHED = sql_list(FINISHED_PHASES)

LOCK_EXECUTION = f"""
SELECT {ATTEMPT_COLUMNS} FROM drover_attempts a WHERE a.run_id = %s AND a.number = %s FOR UPDATE
"""

STEP_AT = "SELECT seq, name, value FROM drover_steps WHERE run_id = %s AND seq = %s"

RECORD_STEP = """
INSERT INTO drover_steps (run_id, seq, name, value, attempt)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (run_id, seq) DO NOTHING
"""

WAITPOINT_COLUMNS = "run_id, seq, kind, wake_at, token_id, runs::text[] AS runs, state, created_at"

WAITPOINT = f"""
SELECT {WAITPOINT_COLUMNS} FROM drover_waitpoints WHERE run_id = %s AND seq = %s FOR UPDATE
"""

INSERT_WAITPOINT = f"""
INSERT INTO drover_waitpoints (run_id, seq, kind, wake_at, token_id, runs, state)
VALUES (%(run_id)s, %(seq)s, %(kind)s,
        coalesce(%(until)s::timestamptz, now() + make_interval(secs => %(seconds)s::float8)),
        %(token_id)s, %(runs)s::uuid[], 'pending')
RETURNING {WAITPOINT_COLUMNS}
"""

SET_WAITPOINT = """
UPDATE drover_waitpoints SET state = %s, resolved_at = CASE WHEN %s THEN now() END
WHERE run_id = %s AND seq = %s
"""

SECONDS_LEFT = "SELECT extract(epoch FROM %s::timestamptz - now())::float8"


def _started_items(run: str) -> str:
    """FROM/WHERE over the items (`{name, id, task}`) of the trigger and batch calls recorded
    for the run given by the placeholder `run`: the children its code started."""
    return f"""
FROM drover_steps s, jsonb_array_elements(s.value) AS item
WHERE s.run_id = {run} AND (s.name LIKE 'trigger:%%' OR s.name LIKE 'batch:%%')
  AND jsonb_typeof(s.value) = 'array'"""


# Every awaited run's outcome, in the order awaited; a run not recorded yet is not finished.
# A child whose TaskRun the operator has not recorded yet (created a moment ago) is named
# from the parent's recorded trigger call, so `status.waitingFor.runs` always holds names.
AWAITED_RUNS = f"""
SELECT c.ord::int AS ord, c.id::text AS id,
       coalesce(r.name, (
           SELECT item ->> 'name' {_started_items("%(parent)s")} AND item ->> 'id' = c.id::text
           LIMIT 1)) AS name,
       r.phase, r.output, r.error, coalesce(r.phase IN ({_FINISHED}), false) AS finished
FROM unnest(%(runs)s::uuid[]) WITH ORDINALITY AS c(id, ord)
LEFT JOIN drover_runs r ON r.id = c.id
ORDER BY c.ord
"""

SUSPEND_RUN = """
UPDATE drover_runs
SET phase = 'Waiting', waiting_for = %(waiting_for)s, reason = 'Waiting', message = %(message)s,
    version = version + 1
WHERE id = %(id)s
"""

# Waitpoints of suspended runs whose wait is over, with when it was over.
DUE = f"""
SELECT {WAITPOINT_COLUMNS},
       CASE w.kind
         WHEN 'Duration' THEN w.wake_at
         WHEN 'Token' THEN (SELECT t.completed_at FROM drover_tokens t WHERE t.id = w.token_id)
         ELSE (SELECT max(r.finished_at) FROM drover_runs r WHERE r.id = ANY(w.runs))
       END AS due_at
FROM drover_waitpoints w
WHERE w.state = 'waiting' AND (
       (w.kind = 'Duration' AND w.wake_at <= now())
    OR (w.kind = 'Token' AND EXISTS (SELECT 1 FROM drover_tokens t
                                     WHERE t.id = w.token_id AND t.state <> 'waiting'))
    OR (w.kind = 'Runs' AND NOT EXISTS (
            SELECT 1 FROM unnest(w.runs) AS c(id) LEFT JOIN drover_runs r ON r.id = c.id
            WHERE r.id IS NULL OR r.phase NOT IN ({_FINISHED}))))
ORDER BY w.created_at
LIMIT %s
FOR UPDATE OF w SKIP LOCKED
"""

RESUME_RUN = """
UPDATE drover_runs
SET phase = 'Queued', resume = true, waiting_for = NULL, eligible_at = NULL, reason = NULL,
    message = NULL, version = version + 1
WHERE id = %s AND phase = 'Waiting' AND NOT cancel_requested
RETURNING namespace, task, attempt
"""

# The ids of the runs this run's code started (its recorded triggers, single or batch).
STARTED_RUNS = f"SELECT item ->> 'id' AS id {_started_items('%s')}"

# When the next timer or token timeout falls due (Postgres' clock), in seconds.
NEXT_DUE = """
SELECT extract(epoch FROM least(
    (SELECT min(wake_at) FROM drover_waitpoints WHERE state = 'waiting' AND kind = 'Duration'),
    (SELECT min(timeout_at) FROM drover_tokens WHERE state = 'waiting')) - now())::float8
"""


class WaitError(RequestError):
    """A workflow call that cannot be honoured: 409 `non-determinism` or `attempt-inactive`,
    404 `not-found`."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(404 if type == "not-found" else 409, type, message)


class _Waiting:
    """The outcome of a wait that is not over."""


_WAITING: Any = _Waiting()


class WaitStore:
    """`drover_waitpoints`, and the steps that record workflow calls."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def _lock(
        self, conn: Connection, run_id: str, execution: int
    ) -> tuple[RunRecord, AttemptRecord]:
        """The run and its execution, locked; the execution must be the run's active one
        (a zombie's calls change nothing)."""
        run = await fetch_one(conn, RunRecord, LOCK_RUN, (run_id,))
        row = await fetch_one(conn, AttemptRecord, LOCK_EXECUTION, (run_id, execution))
        if run is None or row is None or not row.active or run.execution != execution:
            raise WaitError("attempt-inactive", f"execution {execution} is no longer active")
        return run, row

    async def wait(
        self,
        run_id: str,
        execution: int,
        seq: int,
        kind: WaitKind,
        *,
        seconds: float | None = None,
        until: dt.datetime | None = None,
        token_id: str | None = None,
        runs: list[str] | None = None,
        suspend_after: dt.timedelta,
    ) -> Waited:
        """Wait at `seq`, deciding in one transaction: the recorded result if the wait is
        over; else sleep in the pod (a time wait shorter than `suspend_after`) or suspend
        the run (its execution ends, its slot is freed, it is `Waiting`)."""
        async with transaction(self.pool) as conn:
            run, execution_row = await self._lock(conn, run_id, execution)
            recorded = await fetch_one(conn, StepValue, STEP_AT, (run_id, seq))
            if recorded is not None:
                if recorded.name != wait_step(kind):
                    raise WaitError(
                        "non-determinism",
                        f"position #{seq} is {recorded.name!r} in the run's history, not a"
                        f" {kind} wait: the task's code path changed between attempts",
                    )
                return Waited("resolved", recorded.value)
            point = await fetch_one(conn, Waitpoint, WAITPOINT, (run_id, seq))
            if point is None:
                point = await fetch_one(
                    conn,
                    Waitpoint,
                    INSERT_WAITPOINT,
                    {
                        "run_id": run_id,
                        "seq": seq,
                        "kind": kind.value,
                        "until": until,
                        "seconds": seconds if kind == WaitKind.DURATION else None,
                        "token_id": token_id,
                        "runs": runs,
                    },
                )
                assert point is not None
            elif point.kind != kind:
                raise WaitError(
                    "non-determinism",
                    f"position #{seq} waits on {point.kind}, not {kind}: the task's code path"
                    " changed between attempts",
                )
            value, names = await self._outcome(conn, point)
            if value is not _WAITING:
                await self._resolve(conn, point, value, execution_row.try_number)
                return Waited("resolved", value)
            if point.kind == WaitKind.DURATION:
                left = float(await fetch_value(conn, SECONDS_LEFT, (point.wake_at,)))
                if left < suspend_after.total_seconds():
                    return Waited("sleep", sleep_seconds=max(left, 0.0))
            await self._suspend(conn, run, execution_row, point, names)
            return Waited("suspended", run=run, attempt=execution_row)

    async def _outcome(self, conn: Connection, point: Waitpoint) -> tuple[Any, list[str] | None]:
        """The wait's result if it is over, else `_WAITING`; and the awaited runs' names."""
        if point.kind == WaitKind.DURATION:
            left = float(await fetch_value(conn, SECONDS_LEFT, (point.wake_at,)))
            assert point.wake_at is not None
            return ({"until": point.wake_at.isoformat()} if left <= 0 else _WAITING), None
        if point.kind == WaitKind.TOKEN:
            token = await fetch_one(conn, TokenRecord, TOKEN, (point.token_id,))
            if token is None:
                raise WaitError("not-found", f"no token {point.token_id}")
            return (_WAITING if token.state == "waiting" else token_value(token)), None
        awaited = await fetch_all(
            conn, AwaitedRun, AWAITED_RUNS, {"parent": point.run_id, "runs": point.runs or []}
        )
        names = [a.name or a.id for a in awaited]
        if not all(a.finished for a in awaited):
            return _WAITING, names
        return runs_value(awaited), names

    async def _resolve(
        self, conn: Connection, point: Waitpoint, value: Any, try_number: int
    ) -> None:
        await conn.execute(
            RECORD_STEP, (point.run_id, point.seq, wait_step(point.kind), Jsonb(value), try_number)
        )
        await conn.execute(SET_WAITPOINT, ("resolved", True, point.run_id, point.seq))

    async def _suspend(
        self,
        conn: Connection,
        run: RunRecord,
        execution: AttemptRecord,
        point: Waitpoint,
        names: list[str] | None,
    ) -> None:
        """End the execution (freeing its slot; its pod is stopped) and park the run."""
        message = suspend_message(point, names)
        await conn.execute(
            END_ATTEMPT,
            {
                "run_id": run.id,
                "number": execution.number,
                "state": AttemptState.SUSPENDED.value,
                "exit_code": None,
                "reason": "Suspended",
                "message": message,
                "kill": True,
                "kill_grace": None,
            },
        )
        await conn.execute(SET_WAITPOINT, ("waiting", False, run.id, point.seq))
        await conn.execute(
            SUSPEND_RUN,
            {"id": run.id, "waiting_for": Jsonb(waiting_for(point, names)), "message": message},
        )
        event = EventRecord("Normal", "Suspended", message, execution.try_number)
        await record_run_events(conn, run.id, [event])
        await notify(conn, f"{run.namespace}/{run.task}")

    async def resolve_due(self, limit: int) -> list[Resumed]:
        """Record the results of suspended runs' waits that are over and queue those runs
        again, to be admitted under their Task's limits like any run. One transaction."""
        resumed: list[Resumed] = []
        async with transaction(self.pool) as conn:
            await time_out_tokens(conn)
            for point in await fetch_all(conn, Waitpoint, DUE, (limit,)):
                value, _ = await self._outcome(conn, point)
                if value is _WAITING:
                    continue
                queued = await (await conn.execute(RESUME_RUN, (point.run_id,))).fetchone()
                if queued is None:  # canceled meanwhile
                    continue
                await self._resolve(conn, point, value, queued["attempt"])
                message = f"the {point.kind.lower()} wait at position #{point.seq} is over"
                await record_run_events(
                    conn, point.run_id, [EventRecord("Normal", "Resumed", message)]
                )
                await notify(conn, f"{queued['namespace']}/{queued['task']}")
                resumed.append(
                    Resumed(
                        point.run_id,
                        queued["namespace"],
                        queued["task"],
                        point.seq,
                        point.kind,
                        point.due_at,
                    )
                )
        return resumed

    async def seconds_to_next(self) -> float | None:
        """Seconds until the next timer or token timeout is due (None: none pending)."""
        async with self.pool.connection() as conn:
            value = await fetch_value(conn, NEXT_DUE)
        return None if value is None else float(value)

    # -- steps recording workflow calls --------------------------------------------------------

    async def started_runs(self, run_id: str) -> list[str]:
        """Ids of the runs this run's code started (recorded trigger calls)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(STARTED_RUNS, (run_id,))
            return [row["id"] for row in await cursor.fetchall()]

    async def recorded(self, run_id: str, seq: int) -> StepValue | None:
        async with self.pool.connection() as conn:
            return await fetch_one(conn, StepValue, STEP_AT, (run_id, seq))

    async def record(
        self, run_id: str, execution: int, seq: int, name: str, value: Any
    ) -> StepValue:
        """Record a workflow call's result at `seq` if nothing is recorded there; what is
        recorded there now (the caller compares the name: non-determinism)."""
        async with transaction(self.pool) as conn:
            _, row = await self._lock(conn, run_id, execution)
            await conn.execute(RECORD_STEP, (run_id, seq, name, Jsonb(value), row.try_number))
            recorded = await fetch_one(conn, StepValue, STEP_AT, (run_id, seq))
        assert recorded is not None
        return recorded
