"""The store's operations. Each is one transaction, and each decision is committed here
before the operator acts on it in Kubernetes (durable first).

Attempts hold concurrency slots (`active`); a slot is taken in the admission transaction and
released in the transaction that ends the attempt. Admission for a Task is serialized with a
transaction-scoped advisory lock, so limits hold with bursts and with two operators at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from drover_operator import metrics, tracing
from drover_operator.crd import TaskSpec, parse_duration
from drover_operator.outcomes import FINISHED, NextStep, Outcome, max_duration, next_step
from drover_operator.pods import pod_name
from drover_operator.store import queries as q
from drover_operator.store.db import Connection, transaction
from drover_operator.tokens import attempt_token, token_hash

_BATCH = 200


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
    # Set when the run is refused at once (e.g. a payload that fails the Task's schema).
    failed: tuple[str, str] | None = None


@dataclass(frozen=True)
class Admitted:
    run_id: str
    number: int
    pod_name: str
    waiting_since: dt.datetime | None = None


def _queue_key(namespace: str, task: str) -> str:
    return f"drover.admission/{namespace}/{task}"


async def _event(
    conn: Connection, run_id: Any, attempt: int | None, kind: str, reason: str, message: str
) -> None:
    await conn.execute(q.INSERT_EVENT, (run_id, attempt, kind, reason, message))


async def _wake(conn: Connection, namespace: str, task: str) -> None:
    """Delivered on commit: other replicas' admission loops run for this Task promptly."""
    await conn.execute(q.NOTIFY, (f"{namespace}/{task}",))


class Store:
    def __init__(
        self, pool: AsyncConnectionPool[Connection], signing_key: bytes | None = None
    ) -> None:
        self.pool = pool
        # Derives each attempt's API token (see tokens.py); None: no SDK credentials.
        self.signing_key = signing_key

    # -- tasks ------------------------------------------------------------------------------

    async def upsert_task(
        self,
        namespace: str,
        name: str,
        uid: str,
        generation: int,
        spec: dict[str, Any],
        invalid: str | None,
    ) -> bool:
        """Record a Task's spec; False when nothing changed (its own status updates)."""
        async with transaction(self.pool) as conn:
            # The admission lock first, as `admit` takes it: both update the Task's waiting
            # runs, and taking locks in one order is what keeps them from deadlocking.
            await conn.execute(q.ADMISSION_LOCK, (_queue_key(namespace, name),))
            current = await (await conn.execute(q.TASK_FOR_UPDATE, (namespace, name))).fetchone()
            same = current is not None and (
                str(current["uid"]),
                current["generation"],
                current["invalid"],
            ) == (uid, generation, invalid)
            if same:
                return False
            await conn.execute(
                q.UPSERT_TASK,
                {
                    "namespace": namespace,
                    "name": name,
                    "uid": uid,
                    "generation": generation,
                    "spec": Jsonb(spec),
                    "invalid": invalid,
                },
            )
            if current is None or current["invalid"] != invalid:
                # Waiting runs' status says why they wait (TaskNotFound, TaskNotReady).
                await conn.execute(q.TOUCH_WAITING_RUNS, (namespace, name))
            await _wake(conn, namespace, name)
            return True

    async def delete_task(self, namespace: str, name: str) -> None:
        async with transaction(self.pool) as conn:
            await conn.execute(q.ADMISSION_LOCK, (_queue_key(namespace, name),))
            await conn.execute(q.DELETE_TASK, (namespace, name))
            await conn.execute(q.TOUCH_WAITING_RUNS, (namespace, name))

    # -- runs -------------------------------------------------------------------------------

    async def record_run(self, run: NewRun) -> bool:
        """Record a TaskRun once (keyed by UID); False when it was already recorded."""
        phase, reason, message, error, finished = "Queued", None, None, None, None
        if run.failed is not None:
            phase, (reason, message) = "Failed", run.failed
            error = Jsonb({"type": reason, "message": message, "retryable": False})
            finished = dt.datetime.now(dt.UTC)
        async with transaction(self.pool) as conn:
            cursor = await conn.execute(
                q.INSERT_RUN,
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
                    "phase": phase,
                    "eligible_at": run.eligible_at,
                    "expires_at": run.expires_at,
                    "created_at": run.created_at,
                    "reason": reason,
                    "message": message,
                    "finished_at": finished,
                    "error": error,
                    "scheduled_at": run.scheduled_at,
                },
            )
            if cursor.rowcount == 0:
                return False
            if run.failed is not None:
                await _event(conn, run.id, None, "Warning", reason or "Failed", message or "")
            else:
                await _event(conn, run.id, None, "Normal", "Queued", f"queued for Task {run.task}")
                await _wake(conn, run.namespace, run.task)
        # Committed: count it (and trace a run refused at once).
        metrics.RUNS_CREATED.labels(run.namespace, run.task).inc()
        if run.failed is not None:
            metrics.run_finished(run.namespace, run.task, phase)
            tracing.run_span(
                run.id,
                namespace=run.namespace,
                name=run.name,
                task=run.task,
                phase=phase,
                attempts=0,
                created_at=run.created_at,
                message=message,
            )
        return True

    async def close(self, run_id: str, *, reason: str, message: str, deleted: bool) -> bool:
        """Cancel a run (spec.cancel, or its TaskRun deleted): a queued run never starts, an
        active attempt gives up its slot now and its pod is stopped. False if already over."""
        async with transaction(self.pool) as conn:
            run = await (await conn.execute(q.LOCK_RUN, (run_id,))).fetchone()
            if run is None:
                return False
            if run["phase"] in FINISHED:
                if deleted and run["deleted_at"] is None:
                    await conn.execute(
                        q.FINISH_RUN,
                        {
                            "id": run_id,
                            "phase": run["phase"],
                            "reason": run["reason"],
                            "message": run["message"],
                            "error": Jsonb(run["error"]),
                            "cancel": False,
                            "deleted_at": dt.datetime.now(dt.UTC),
                        },
                    )
                return False
            attempt = await (await conn.execute(q.ACTIVE_ATTEMPT, (run_id,))).fetchone()
            if attempt is not None:
                await conn.execute(
                    q.END_ATTEMPT,
                    {
                        "run_id": run_id,
                        "number": attempt["number"],
                        "state": "Canceled",
                        "exit_code": None,
                        "reason": reason,
                        "message": message,
                        "kill": True,
                        "kill_grace": None,
                    },
                )
            await conn.execute(
                q.FINISH_RUN,
                {
                    "id": run_id,
                    "phase": "Canceled",
                    "reason": reason,
                    "message": message,
                    "error": None,
                    "cancel": True,
                    "deleted_at": dt.datetime.now(dt.UTC) if deleted else None,
                },
            )
            await _event(conn, run_id, run["attempt"] or None, "Normal", reason, message)
            await _wake(conn, run["namespace"], run["task"])
        metrics.run_finished(run["namespace"], run["task"], "Canceled", run["started_at"])
        if attempt is not None:
            metrics.ATTEMPTS_FINISHED.labels(run["namespace"], run["task"], "Canceled").inc()
            tracing.attempt_span(
                run_id,
                attempt["number"],
                namespace=run["namespace"],
                task=run["task"],
                admitted_at=attempt["admitted_at"],
                state="Canceled",
                reason=reason,
                message=message,
            )
        tracing.run_span(
            run_id,
            namespace=run["namespace"],
            name=run["name"],
            task=run["task"],
            phase="Canceled",
            attempts=run["attempt"],
            created_at=run["created_at"],
            message=message,
        )
        return True

    # -- admission --------------------------------------------------------------------------

    async def admit(
        self, namespace: str, task: str, default_pending: dt.timedelta
    ) -> list[Admitted]:
        """Admit waiting runs of one Task into free slots, by priority then creation order."""
        async with transaction(self.pool) as conn:
            await conn.execute(q.ADMISSION_LOCK, (_queue_key(namespace, task),))
            row = await (await conn.execute(q.GET_TASK, (namespace, task))).fetchone()
            if row is None or row["invalid"] is not None:
                return []
            spec = TaskSpec.model_validate(row["spec"])
            usage = await (await conn.execute(q.ACTIVE_USAGE, (namespace, task))).fetchone()
            assert usage is not None
            limit = spec.concurrency.limit if spec.concurrency else None
            per_key_limit = spec.concurrency.per_key_limit if spec.concurrency else None
            free = None if limit is None else limit - usage["active"]
            per_key: dict[str, int] = dict(usage["per_key"])
            pending_limit = _pending_timeout(spec, default_pending)
            admitted: list[Admitted] = []
            offset = 0
            while free is None or free > 0:
                page = _BATCH if free is None else max(free * 4, _BATCH)
                candidates = await (
                    await conn.execute(q.WAITING_RUNS, (namespace, task, page, offset))
                ).fetchall()
                if not candidates:
                    break
                offset += len(candidates)
                for run in candidates:
                    key = run["concurrency_key"]
                    if key is not None and per_key_limit is not None:
                        if per_key.get(key, 0) >= per_key_limit:
                            continue
                        per_key[key] = per_key.get(key, 0) + 1
                    admitted.append(
                        await self._start_attempt(
                            conn, run, namespace, task, spec, row["spec"], pending_limit
                        )
                    )
                    if free is not None:
                        free -= 1
                        if free == 0:
                            break
                if free is None and len(candidates) < page:
                    break
        # Committed: count and trace the admissions.
        for entry in admitted:
            metrics.ATTEMPTS_ADMITTED.labels(namespace, task).inc()
            tracing.admission_span(
                entry.run_id,
                entry.number,
                namespace=namespace,
                task=task,
                waiting_since=entry.waiting_since,
            )
        return admitted

    async def _start_attempt(
        self,
        conn: Connection,
        run: dict[str, Any],
        namespace: str,
        task: str,
        spec: TaskSpec,
        raw_spec: dict[str, Any],
        pending: dt.timedelta,
    ) -> Admitted:
        number_row = await (await conn.execute(q.START_ATTEMPT, (run["id"],))).fetchone()
        assert number_row is not None
        number: int = number_row["attempt"]
        name = pod_name(run["name"], str(run["id"]), number)
        await conn.execute(
            q.INSERT_ATTEMPT,
            {
                "run_id": run["id"],
                "number": number,
                "namespace": namespace,
                "task": task,
                "concurrency_key": run["concurrency_key"],
                "pod_name": name,
                "task_spec": Jsonb(raw_spec),
                "pending": pending,
                "token_hash": self._token_hash(str(run["id"]), number),
                # Only SDK tasks beat; a plain command is watched through its pod alone.
                "heartbeat_timeout": (
                    parse_duration(spec.timeouts.heartbeat) if spec.entrypoint else None
                ),
            },
        )
        await _event(
            conn,
            run["id"],
            number,
            "Normal",
            "Admitted",
            f"attempt {number} of {spec.retry.max_attempts} admitted",
        )
        # Waiting since the TaskRun was created, or, for a retry, since it became eligible.
        since = run["created_at"] if number == 1 else run["eligible_at"] or run["created_at"]
        return Admitted(str(run["id"]), number, name, since)

    # -- attempts ---------------------------------------------------------------------------

    async def pod_created(self, run_id: str, number: int) -> None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(q.MARK_POD_CREATED, (run_id, number))).fetchone()
        if row is not None and number == 1:
            metrics.ADMISSION_LATENCY.labels(row["namespace"], row["task"]).observe(
                max(0.0, float(row["latency"]))
            )

    async def attempt_running(self, run_id: str, number: int, started_at: dt.datetime) -> bool:
        async with transaction(self.pool) as conn:
            attempt = await (await conn.execute(q.GET_ATTEMPT, (run_id, number))).fetchone()
            if attempt is None or attempt["state"] != "Admitted" or not attempt["active"]:
                return False
            spec = TaskSpec.model_validate(attempt["task_spec"])
            limit = max_duration(spec)
            cursor = await conn.execute(
                q.MARK_RUNNING,
                {"run_id": run_id, "number": number, "started_at": started_at, "limit": limit},
            )
            marked = await cursor.fetchone()
            assert marked is not None
            await conn.execute(q.RUN_STARTED, (marked["started_at"], run_id))
            await _event(
                conn,
                run_id,
                number,
                "Normal",
                "Started",
                f"attempt {number} started in pod {attempt['pod_name']}",
            )
            return True

    def _token_hash(self, run_id: str, number: int) -> str | None:
        if self.signing_key is None:
            return None
        return token_hash(attempt_token(self.signing_key, run_id, number))

    async def finish_attempt(
        self,
        run_id: str,
        number: int,
        outcome: Outcome,
        *,
        kill: bool = False,
        kill_grace: int | None = None,
    ) -> NextStep | None:
        """End an active attempt and decide the run's next step (retry or finish); None if
        the attempt had already ended (a replayed event, another replica)."""
        async with transaction(self.pool) as conn:
            ended = await self._end_attempt(conn, run_id, number, outcome, kill, kill_grace)
        if ended is None:
            return None
        # Committed: count and trace what was decided.
        run, attempt, step = ended
        namespace, task = run["namespace"], run["task"]
        metrics.ATTEMPTS_FINISHED.labels(namespace, task, outcome.state).inc()
        if outcome.reason == "Stalled":
            metrics.STALLS.labels(namespace, task).inc()
        tracing.attempt_span(
            run_id,
            number,
            namespace=namespace,
            task=task,
            admitted_at=attempt["admitted_at"],
            state=outcome.state,
            reason=outcome.reason,
            message=outcome.message,
            exit_code=outcome.exit_code,
        )
        if step.phase == "Retrying":
            metrics.RETRIES.labels(namespace, task).inc()
        else:
            started = run["started_at"] or attempt["started_at"]
            metrics.run_finished(namespace, task, step.phase, started)
            tracing.run_span(
                run_id,
                namespace=namespace,
                name=run["name"],
                task=task,
                phase=step.phase,
                attempts=number,
                created_at=run["created_at"],
                message=outcome.message,
            )
        return step

    async def _end_attempt(
        self,
        conn: Connection,
        run_id: str,
        number: int,
        outcome: Outcome,
        kill: bool,
        kill_grace: int | None,
    ) -> tuple[dict[str, Any], dict[str, Any], NextStep] | None:
        run = await (await conn.execute(q.LOCK_RUN, (run_id,))).fetchone()
        attempt = await (await conn.execute(q.GET_ATTEMPT, (run_id, number))).fetchone()
        if run is None or attempt is None or not attempt["active"]:
            return None
        spec = TaskSpec.model_validate(attempt["task_spec"])
        await conn.execute(
            q.END_ATTEMPT,
            {
                "run_id": run_id,
                "number": number,
                "state": outcome.state,
                "exit_code": outcome.exit_code,
                "reason": outcome.reason,
                "message": outcome.message,
                "kill": kill,
                "kill_grace": kill_grace,
            },
        )
        if outcome.output is not None:
            await conn.execute(q.SET_OUTPUT, (Jsonb(outcome.output), run_id))
        now = dt.datetime.now(dt.UTC)
        step = next_step(spec, number, outcome, now)
        error = (
            None
            if step.phase == "Succeeded"
            else Jsonb(
                {
                    "type": outcome.reason,
                    "message": outcome.message,
                    "retryable": outcome.retryable,
                    **({"traceback": outcome.traceback} if outcome.traceback else {}),
                }
            )
        )
        if step.phase == "Retrying":
            assert step.retry_at is not None
            await conn.execute(
                q.RETRY_RUN,
                {
                    "id": run_id,
                    "eligible_at": step.retry_at,
                    "reason": outcome.reason,
                    "message": outcome.message,
                    "error": error,
                },
            )
            await _event(
                conn,
                run_id,
                number,
                "Warning",
                "AttemptFailed",
                f"attempt {number} failed: {outcome.message}",
            )
            delay = (step.retry_at - now).total_seconds()
            await _event(
                conn,
                run_id,
                number,
                "Normal",
                "RetryScheduled",
                f"attempt {number + 1} in {delay:.1f}s",
            )
        else:
            await conn.execute(
                q.FINISH_RUN,
                {
                    "id": run_id,
                    "phase": step.phase,
                    "reason": outcome.reason,
                    "message": outcome.message,
                    "error": error,
                    "cancel": False,
                    "deleted_at": None,
                },
            )
            kind = "Normal" if step.phase == "Succeeded" else "Warning"
            await _event(
                conn,
                run_id,
                number,
                kind,
                step.phase,
                f"run {step.phase.lower()} after {number} attempt(s): {outcome.message}",
            )
        await _wake(conn, run["namespace"], run["task"])
        return run, attempt, step

    # -- what the reconciler polls ----------------------------------------------------------

    async def fetch(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            return await (await conn.execute(query, params)).fetchall()

    async def execute(self, query: str, params: tuple[Any, ...] = ()) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(query, params)

    async def expire(self) -> list[UUID]:
        async with transaction(self.pool) as conn:
            rows = await (await conn.execute(q.EXPIRE_RUNS)).fetchall()
            for row in rows:
                await _event(
                    conn, row["id"], None, "Warning", "Expired", "not started within its ttl"
                )
        for row in rows:
            metrics.run_finished(row["namespace"], row["task"], "Expired")
            tracing.run_span(
                str(row["id"]),
                namespace=row["namespace"],
                name=row["name"],
                task=row["task"],
                phase="Expired",
                attempts=0,
                created_at=row["created_at"],
                message="not started within its ttl",
            )
        return [row["id"] for row in rows]


def _pending_timeout(spec: TaskSpec, default: dt.timedelta) -> dt.timedelta:
    return parse_duration(spec.timeouts.pending) if spec.timeouts.pending else default
