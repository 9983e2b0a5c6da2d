"""Admission: waiting runs of a Task take free concurrency slots, in one transaction per Task
under an advisory lock, so limits hold with bursts and with several replicas at once.

A slot is taken here (the attempt row, `active`) and released in the transaction that ends
the attempt, or, for a Task with `concurrency.slotRelease: PodGone` (`holds_pod`), once its
pod is gone. Who gets a slot and what the attempt looks like are decided by the caller's
`AdmissionPolicy` (the run lifecycle's rules); this module only reads and writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from psycopg.types.json import Jsonb

from drover_operator.domain.lifecycle import AttemptPlan, Slots, Wait
from drover_operator.domain.records import Queue, TaskRecord, WaitingRun
from drover_operator.store.db import (
    Connection,
    Pool,
    advisory_lock,
    fetch_all,
    fetch_one,
    fetch_two,
    fetch_value,
    pipelined,
)
from drover_operator.store.outbox import record_run_events
from drover_operator.store.tasks import GET_TASK, admission_key

ACTIVE_USAGE = """
SELECT coalesce(sum(n), 0)::int AS active,
       coalesce(jsonb_object_agg(concurrency_key, n) FILTER (WHERE concurrency_key IS NOT NULL),
                '{}'::jsonb) AS per_key
FROM (SELECT concurrency_key, count(*) AS n FROM drover_attempts
      -- holds_pod: ended, of a `slotRelease: PodGone` Task, its pod not yet seen gone.
      WHERE namespace = %s AND task = %s AND (active OR holds_pod)
      GROUP BY concurrency_key) AS usage
"""

WAITING_RUNS = """
SELECT id, name, concurrency_key, attempt, created_at, eligible_at, resume FROM drover_runs
WHERE namespace = %s AND task = %s AND phase IN ('Queued', 'Retrying')
  AND NOT cancel_requested AND (eligible_at IS NULL OR eligible_at <= now())
  AND NOT (attempt = 0 AND coalesce(expires_at <= now(), false))  -- past its ttl: never admitted
ORDER BY priority DESC, created_at, seq
LIMIT %s OFFSET %s
"""

# A resumed run continues its attempt (the try) in a new execution (a new pod). The candidates
# were read without locking them: a cancel or an expiry that committed since then (this
# UPDATE waits for its row lock, then re-checks the WHERE) leaves the run alone. Without the
# phase check a run canceled while Queued was started anyway, and ran to its end.
START_ATTEMPT = """
UPDATE drover_runs
SET phase = 'Starting', attempt = attempt + CASE WHEN resume THEN 0 ELSE 1 END,
    execution = execution + 1, resume = false, waiting_for = NULL, eligible_at = NULL,
    reason = NULL, message = NULL, wait_reason = NULL, wait_message = NULL,
    version = version + 1
WHERE id = %s AND phase IN ('Queued', 'Retrying') AND NOT cancel_requested
RETURNING attempt AS try_number, execution
"""

# How long the attempt's earlier executions ran (maxDuration counts executing, not waiting).
EXECUTED = """
SELECT coalesce(sum(finished_at - started_at), interval '0')
FROM drover_attempts WHERE run_id = %s AND try_number = %s
  AND started_at IS NOT NULL AND finished_at IS NOT NULL
"""

# admitted_at is the clock when the slot was taken, not now() (the transaction's start, which
# can precede the commit that freed the slot while this one waited for the advisory lock):
# an attempt's recorded interval then never starts before its predecessor's ended.
INSERT_ATTEMPT = """
INSERT INTO drover_attempts (run_id, number, try_number, namespace, task, concurrency_key,
                             pod_name, state, task_spec, pending_deadline_at, token_hash,
                             heartbeat_timeout, max_duration, admitted_at, holds_pod)
VALUES (%(run_id)s, %(number)s, %(try_number)s, %(namespace)s, %(task)s, %(concurrency_key)s,
        %(pod_name)s, 'Admitted', %(task_spec)s, now() + %(pending)s::interval,
        %(token_hash)s, %(heartbeat_timeout)s::interval, %(max_duration)s::interval,
        clock_timestamp(), %(holds_pod)s)
"""

# Why the runs left waiting wait; only rows whose reason changes are touched (and pushed).
SET_WAIT = """
UPDATE drover_runs
SET wait_reason = %(reason)s, wait_message = %(message)s, version = version + 1
WHERE namespace = %(namespace)s AND task = %(task)s AND phase IN ('Queued', 'Retrying')
  AND NOT cancel_requested AND (eligible_at IS NULL OR eligible_at <= now())
  AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
  AND NOT (id = ANY(%(except)s::uuid[]))
  AND (wait_reason IS DISTINCT FROM %(reason)s OR wait_message IS DISTINCT FROM %(message)s)
"""

DUE_QUEUES = """
SELECT DISTINCT r.namespace, r.task FROM drover_runs r
JOIN drover_tasks t ON t.namespace = r.namespace AND t.name = r.task AND t.invalid IS NULL
WHERE r.phase IN ('Queued', 'Retrying') AND NOT r.cancel_requested
  AND (r.eligible_at IS NULL OR r.eligible_at <= now())
"""

# Seconds until the next delayed or backed-off run becomes eligible (Postgres' clock).
NEXT_ELIGIBLE = """
SELECT extract(epoch FROM min(eligible_at) - now())::float8 FROM drover_runs
WHERE phase IN ('Queued', 'Retrying') AND eligible_at > now()
"""


class AdmissionPolicy(Protocol):
    """The rules admission applies (the run lifecycle's), asked inside the transaction."""

    def slots(self, task: TaskRecord, active: int, per_key: dict[str, int]) -> Slots | None:
        """The Task's free slots given its active attempts; None: admit nothing."""

    def plan(self, task: TaskRecord, run: WaitingRun, start: Start) -> AttemptPlan:
        """The execution `start` describes."""


@dataclass(frozen=True)
class Start:
    """Which execution admission starts: attempt `try_number` of the run, in its execution
    `execution`; `resumed` after a wait, having run `executed` already in this attempt."""

    try_number: int
    execution: int
    resumed: bool
    executed: dt.timedelta


@dataclass(frozen=True)
class _Started:
    try_number: int
    execution: int


@dataclass(frozen=True)
class Admitted:
    """An attempt admission created."""

    run_id: str
    number: int
    pod_name: str
    #: Since when it waited for its slot: the TaskRun's creation, or the retry's eligibility.
    waiting_since: dt.datetime


@dataclass(frozen=True)
class _Usage:
    active: int
    per_key: dict[str, int]


class AdmissionStore:
    """Slots and the attempts that hold them."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def due_queues(self) -> list[Queue]:
        """Tasks with runs that could be admitted now."""
        async with self.pool.connection() as conn:
            return await fetch_all(conn, Queue, DUE_QUEUES)

    async def seconds_to_next_eligible(self) -> float | None:
        """How long until a delayed or backed-off run becomes eligible; None: none is."""
        async with self.pool.connection() as conn:
            value = await fetch_value(conn, NEXT_ELIGIBLE)
        return None if value is None else float(value)

    async def admit(self, namespace: str, task: str, policy: AdmissionPolicy) -> list[Admitted]:
        """Admit waiting runs of one Task into free slots, by priority then creation order."""
        # Pipelined: the lock, the Task and its usage cost one round trip; the attempts and
        # history lines written go out with the next read or the commit.
        async with pipelined(self.pool) as conn:
            await advisory_lock(conn, admission_key(namespace, task))
            record, usage = await fetch_two(
                conn,
                (TaskRecord, GET_TASK, (namespace, task)),
                (_Usage, ACTIVE_USAGE, (namespace, task)),
            )
            if record is None or record.invalid is not None:
                return []
            assert usage is not None
            slots = policy.slots(record, usage.active, usage.per_key)
            if slots is None:
                return []
            admitted: list[Admitted] = []
            # Runs a key's limit holds back, by the reason shown in their status.
            held: dict[Wait, list[str]] = {}
            offset = 0
            while not slots.full:
                page = slots.page_size
                candidates = await fetch_all(
                    conn, WaitingRun, WAITING_RUNS, (namespace, task, page, offset)
                )
                skipped = 0
                for run in candidates:
                    if slots.full:
                        break
                    wait = slots.wait(run.concurrency_key)
                    if wait is not None:
                        skipped += 1
                        held.setdefault(wait, []).append(run.id)
                        continue
                    started = await self._start(conn, record, run, policy)
                    if started is not None:  # else: canceled or expired since it was read
                        slots.take(run.concurrency_key)
                        admitted.append(started)
                if len(candidates) < page:
                    break
                # Admitted runs left the waiting set (this transaction sees its own writes):
                # the next page starts after the ones skipped, not after the whole page.
                offset += skipped
            await self._show_waits(conn, namespace, task, slots, held)
            return admitted

    async def _show_waits(
        self,
        conn: Connection,
        namespace: str,
        task: str,
        slots: Slots,
        held: dict[Wait, list[str]],
    ) -> None:
        keyed = [run_id for ids in held.values() for run_id in ids]
        for wait, ids in held.items():
            await conn.execute(
                SET_WAIT,
                {
                    "namespace": namespace,
                    "task": task,
                    "reason": wait.reason,
                    "message": wait.message,
                    "ids": ids,
                    "except": [],
                },
            )
        full = slots.wait(None)
        if full is not None:  # every other eligible run waits for the Task's limit
            await conn.execute(
                SET_WAIT,
                {
                    "namespace": namespace,
                    "task": task,
                    "reason": full.reason,
                    "message": full.message,
                    "ids": None,
                    "except": keyed,
                },
            )

    async def _start(
        self, conn: Connection, task: TaskRecord, run: WaitingRun, policy: AdmissionPolicy
    ) -> Admitted | None:
        started = await fetch_one(conn, _Started, START_ATTEMPT, (run.id,))
        if started is None:
            return None
        executed = dt.timedelta(0)
        if run.resume:
            executed = await fetch_value(conn, EXECUTED, (run.id, started.try_number))
        start = Start(started.try_number, started.execution, run.resume, executed)
        plan = policy.plan(task, run, start)
        number = started.execution
        await conn.execute(
            INSERT_ATTEMPT,
            {
                "run_id": run.id,
                "number": number,
                "try_number": started.try_number,
                "namespace": task.namespace,
                "task": task.name,
                "concurrency_key": run.concurrency_key,
                "pod_name": plan.pod_name,
                "task_spec": Jsonb(plan.task_spec),
                "pending": plan.pending,
                "token_hash": plan.token_hash,
                "heartbeat_timeout": plan.heartbeat_timeout,
                "max_duration": plan.max_duration,
                "holds_pod": plan.holds_pod,
            },
        )
        await record_run_events(conn, run.id, [plan.event])
        since = run.created_at if number == 1 else run.eligible_at or run.created_at
        return Admitted(run.id, number, plan.pod_name, since)
