"""The run lifecycle: what the kopf handlers feed in, and the loop that acts on it.

Every decision goes through the store first (one transaction each); `Converger` then makes
Kubernetes match what was committed. Both are idempotent, so after a crash, or with a second
replica doing the same work, the cluster converges to the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from pydantic import ValidationError

from drover_operator.converge import Converger
from drover_operator.crd import TaskRunSpec, TaskSpec, parse_duration
from drover_operator.outcomes import Outcome, pending_reason, pod_outcome, started_at
from drover_operator.pods import LABEL_ATTEMPT, LABEL_RUN_UID
from drover_operator.settings import Settings
from drover_operator.store import queries as q
from drover_operator.store.db import listen
from drover_operator.store.runs import NewRun, Store
from drover_operator.validation import payload_problem, task_problem

log = logging.getLogger(__name__)

_BATCH = 200
# Set by the scheduler on the runs it creates: the tick the run is for.
ANNOTATION_SCHEDULED = "drover.dev/scheduled-time"


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class Engine:
    def __init__(self, settings: Settings, store: Store, converger: Converger) -> None:
        self.settings = settings
        self.store = store
        self.converge = converger
        self._wake = asyncio.Event()
        # (run uid, attempt) already known to be running / finished: skips repeat work on
        # the many pod status events that change nothing for us. Only an optimization: the
        # store's transactions are the real guard.
        self._seen_running: set[tuple[str, int]] = set()
        self._seen_finished: set[tuple[str, int]] = set()
        self._recorded: set[str] = set()

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    # -- inputs -----------------------------------------------------------------------------

    async def on_task(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            spec = TaskSpec.model_validate(body.get("spec") or {})
            problem = task_problem(spec)
        except ValidationError as exc:
            problem = f"InvalidSpec: {exc.errors()[0]['msg']}"
        changed = await self.store.upsert_task(
            meta["namespace"],
            meta["name"],
            meta["uid"],
            meta.get("generation", 1),
            body.get("spec") or {},
            problem,
        )
        if changed:  # not for the events our own status updates cause
            self.converge.forget_task_status(meta["namespace"], meta["name"])
            self.wake()

    async def on_task_deleted(self, namespace: str, name: str) -> None:
        await self.store.delete_task(namespace, name)

    async def on_taskrun(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            await self.on_taskrun_deleted(body)
            return
        if uid not in self._recorded:
            if await self._record(body):
                self.wake()
            self._recorded.add(uid)
            await self.converge.ensure_finalizer(body)
        cancel = bool((body.get("spec") or {}).get("cancel"))
        if cancel and await self.store.close(
            uid, reason="Canceled", message="spec.cancel is true", deleted=False
        ):
            self.wake()

    async def on_taskrun_deleted(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        if await self.store.close(
            meta["uid"], reason="Deleted", message="the TaskRun was deleted", deleted=True
        ):
            self.wake()
        await self.converge.kill_pods()
        await self.converge.remove_finalizer(body)
        self._recorded.discard(meta["uid"])

    async def _record(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        spec = TaskRunSpec.model_validate(body.get("spec") or {})
        created = _time(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC)
        eligible = spec.not_before
        if spec.delay:
            eligible = created + parse_duration(spec.delay)
        failed = None
        task = await self.store.fetch(q.GET_TASK, (meta["namespace"], spec.task_ref.name))
        if task:
            try:
                problem = payload_problem(TaskSpec.model_validate(task[0]["spec"]), spec.payload)
            except ValidationError:
                problem = None  # the Task's own condition says what is wrong
            if problem:
                failed = ("InvalidPayload", problem)
        return await self.store.record_run(
            NewRun(
                id=meta["uid"],
                namespace=meta["namespace"],
                name=meta["name"],
                task=spec.task_ref.name,
                generation=meta.get("generation", 1),
                created_at=created,
                concurrency_key=spec.concurrency_key,
                priority=spec.priority,
                payload=spec.payload,
                tags=spec.tags,
                eligible_at=eligible,
                expires_at=created + parse_duration(spec.ttl) if spec.ttl else None,
                scheduled_at=_time((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED)),
                failed=failed,
            )
        )

    async def on_pod(self, event: str, pod: dict[str, Any]) -> None:
        labels = pod.get("metadata", {}).get("labels") or {}
        run_id, attempt = labels.get(LABEL_RUN_UID), labels.get(LABEL_ATTEMPT)
        if not run_id or not attempt or not attempt.isdigit():
            return
        key = (run_id, int(attempt))
        if key in self._seen_finished:
            return
        if event == "DELETED":
            await self._pod_gone(key)
            return
        started = started_at(pod)
        if started is not None and key not in self._seen_running:
            await self.store.attempt_running(run_id, key[1], started)
            self._seen_running.add(key)
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            return
        # Only a finished pod needs the attempt's Task spec (which exit codes are final).
        rows = await self.store.fetch(q.ATTEMPT_TASK_SPEC, (run_id, key[1]))
        if not rows:
            return
        outcome = pod_outcome(pod, TaskSpec.model_validate(rows[0]["task_spec"]))
        if outcome is not None:
            if await self.store.finish_attempt(run_id, key[1], outcome):
                self.wake()
            self._seen_finished.add(key)
            self._seen_running.discard(key)

    async def _pod_gone(self, key: tuple[str, int]) -> None:
        """A pod deleted before its attempt ended (by someone, or with its node)."""
        outcome = Outcome(
            "Lost", "PodDeleted", "the attempt's pod was deleted before it finished", retryable=True
        )
        if await self.store.finish_attempt(key[0], key[1], outcome):
            self.wake()
        self._seen_finished.add(key)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(listen(self.settings.database_url, self.wake, stop))
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:
                    log.exception("reconcile pass failed; retrying")
                    await asyncio.sleep(1)
                delay = await self._until_next_wake()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                self._wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _until_next_wake(self) -> float:
        rows = await self.store.fetch(q.NEXT_WAKE)
        at: dt.datetime | None = rows[0]["at"] if rows else None
        tick = self.settings.tick_seconds
        if at is None:
            return tick
        return max(0.0, min(tick, (at - dt.datetime.now(dt.UTC)).total_seconds()))

    async def tick(self) -> None:
        """One pass: admit, start, time out, stop, and publish what changed."""
        if await self.store.expire():
            self.wake()
        for queue in await self.store.fetch(q.DUE_QUEUES):
            admitted = await self.store.admit(
                queue["namespace"], queue["task"], self.settings.pending_timeout
            )
            if admitted:
                log.debug("admitted %d runs of %s/%s", len(admitted), *queue.values())
        await self.converge.create_pods()
        await self._enforce_deadlines()
        await self._detect_stalls()
        await self._enforce_pending()
        await self.converge.kill_pods()
        await self.converge.push_statuses()
        await self.converge.post_events()
        await self.converge.push_task_statuses()

    async def _enforce_deadlines(self) -> None:
        for row in await self.store.fetch(q.DUE_DEADLINES, (_BATCH,)):
            outcome = Outcome(
                "TimedOut", "TimedOut", "attempt exceeded its maxDuration", retryable=True
            )
            await self.store.finish_attempt(str(row["run_id"]), row["number"], outcome, kill=True)

    async def _detect_stalls(self) -> None:
        """SDK attempts whose last heartbeat (by Postgres' clock) is older than the Task's
        `timeouts.heartbeat`: frozen or lost with their node. Their slot is released and the
        attempt failed (retryable) in one transaction; the pod is then removed at once."""
        for row in await self.store.fetch(q.DUE_STALLS, (_BATCH,)):
            outcome = Outcome(
                "Lost", "Stalled", f"no heartbeat for {float(row['timeout']):g}s", retryable=True
            )
            await self.store.finish_attempt(
                str(row["run_id"]), row["number"], outcome, kill=True, kill_grace=0
            )

    async def _enforce_pending(self) -> None:
        for row in await self.store.fetch(q.DUE_PENDING, (_BATCH,)):
            pod = await self.converge.get_pod(row["namespace"], row["pod_name"])
            reason, message = pending_reason(pod)
            outcome = Outcome(
                "Failed", reason, f"not started within timeouts.pending: {message}", retryable=True
            )
            await self.store.finish_attempt(str(row["run_id"]), row["number"], outcome, kill=True)
