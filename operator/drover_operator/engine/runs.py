"""The reconcile engine: what the kopf handlers feed in, and the loop that acts on it.

Every decision goes through the store first (one transaction each, via `RunLifecycle`); the
converger then makes Kubernetes match what was committed. Both are idempotent, so after a
crash, or with a second replica doing the same work, the cluster converges to the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from pydantic import ValidationError

from drover.protocol.names import (
    ANNOTATION_SCHEDULED_TIME,
    GROUP,
    LABEL_ATTEMPT,
    LABEL_EXECUTION,
    LABEL_RUN_UID,
)
from drover.protocol.timestamps import now, parse_rfc3339
from drover_operator.converge import Converger
from drover_operator.crd import TaskRunSpec, TaskSpec, parse_duration
from drover_operator.domain import attempts, pods
from drover_operator.domain.triggers import ANNOTATION_METADATA
from drover_operator.domain.validation import has_nul, payload_problem, task_problem
from drover_operator.domain.webhooks import DEFAULT_IDEMPOTENCY_HEADER
from drover_operator.engine import observe
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store
from drover_operator.store.db import listen
from drover_operator.store.runs import NewRun

log = logging.getLogger(__name__)

#: How long the publisher lets changes gather before writing them.
PUBLISH_COALESCE_SECONDS = 0.1
#: The most often a pass runs its maintenance (expiry, due waits, deadlines, stalls, pending
#: pods): in a burst, passes follow one another closely and admission is what cannot wait.
MAINTENANCE_INTERVAL_SECONDS = 0.2


def _parent(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """(uid, name) of the TaskRun that owns this one: its parent, for child runs."""
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "TaskRun" and str(owner.get("apiVersion", "")).startswith(
            f"{GROUP}/"
        ):
            return owner.get("uid"), owner.get("name")
    return None, None


def _initial_metadata(annotations: dict[str, str]) -> dict[str, Any] | None:
    """Metadata a trigger gave the run (an annotation, as JSON); ignored when malformed."""
    raw = annotations.get(ANNOTATION_METADATA)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("ignoring the malformed %s annotation", ANNOTATION_METADATA)
        return None
    return value if isinstance(value, dict) else None


def _unstorable(
    payload: Any, tags: Any, concurrency_key: str | None, metadata: Any
) -> tuple[str, str] | None:
    """(reason, message) if a field holds a NUL character, which Postgres cannot store (the
    API refuses such bodies; a TaskRun created directly can still carry one)."""
    fields = {
        "spec.payload": payload,
        "spec.tags": tags,
        "spec.concurrencyKey": concurrency_key,
        f"the {ANNOTATION_METADATA} annotation": metadata,
    }
    for where, value in fields.items():
        if has_nul(value):
            reason = "InvalidPayload" if where == "spec.payload" else "InvalidSpec"
            return reason, f"{where} contains a NUL character (\\u0000), which cannot be stored"
    return None


class Recent:
    """A bounded set that forgets its oldest entries: memory of what was already handled,
    used only to skip repeated work (the store's transactions are the real guard)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, item: Hashable) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Hashable) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def discard(self, item: Hashable) -> None:
        self._items.pop(item, None)


class Engine:
    """Turns watch events into decisions, and runs the reconcile loop."""

    def __init__(
        self,
        settings: OperatorSettings,
        store: Store,
        lifecycle: RunLifecycle,
        converger: Converger,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lifecycle = lifecycle
        self.converge = converger
        self._wake = asyncio.Event()
        # Publishing (TaskRun/Task status, Events) has a loop of its own: admission and pod
        # creation never wait behind a burst's status patches and Events.
        self._publish = asyncio.Event()
        # (run uid, attempt) already known to be running / finished, and runs recorded:
        # skip repeated work on the many events that change nothing for us.
        self._seen_running = Recent()
        self._seen_finished = Recent()
        self._recorded = Recent()
        # Runs known to be over: spec.cancel on them needs no close.
        self._over = Recent()
        # Each Task's (uid, generation, spec: None when invalid) as last stored: events that
        # change no generation (our own status patches) are skipped, and recording a run
        # reads its Task's spec from here instead of Postgres.
        self._tasks: dict[tuple[str, str], tuple[str, int, TaskSpec | None]] = {}
        self._maintained_at = -MAINTENANCE_INTERVAL_SECONDS  # the first pass maintains
        self._maintenance_skipped = False

    async def remember_known_runs(self) -> int:
        """Before the first listing: the runs already recorded, and those already over, so
        that replaying a cluster's TaskRuns after a restart asks the store nothing about
        them (with 10,000 TaskRuns that was a transaction each before any new run's turn)."""
        known = await self.store.runs.known(self._recorded.size)
        for run in reversed(known):  # oldest first: the newest are forgotten last
            self._recorded.add(run.id)
            if run.finished:
                self._over.add(run.id)
        return len(known)

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    # -- inputs -----------------------------------------------------------------------------

    async def on_task(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        generation = meta.get("generation", 1)
        known = self._tasks.get(key)
        if known is not None and known[:2] == (meta["uid"], generation):
            return  # stored already: a status write, ours or the scheduler's
        spec: TaskSpec | None = None
        try:
            spec = TaskSpec.model_validate(body.get("spec") or {})
            problem = task_problem(spec)
        except ValidationError as exc:
            problem = f"InvalidSpec: {exc.errors()[0]['msg']}"
        changed = await self.store.tasks.upsert(
            meta["namespace"],
            meta["name"],
            meta["uid"],
            meta.get("generation", 1),
            body.get("spec") or {},
            problem,
        )
        webhook = (body.get("spec") or {}).get("webhook")
        if isinstance(webhook, dict):
            header = webhook.get("idempotencyHeader") or DEFAULT_IDEMPOTENCY_HEADER
            await self.store.webhooks.declare(meta["namespace"], meta["name"], meta["uid"], header)
        else:
            await self.store.webhooks.drop(meta["namespace"], meta["name"])
        self._tasks[key] = (meta["uid"], generation, spec if problem is None else None)
        if changed:  # not for the events our own status updates cause
            self.converge.status.forget_task(meta["namespace"], meta["name"])
            self.wake()

    async def on_task_deleted(self, namespace: str, name: str) -> None:
        self._tasks.pop((namespace, name), None)
        await self.store.tasks.delete(namespace, name)
        await self.store.webhooks.drop(namespace, name)
        self.converge.status.forget_task(namespace, name, deleted=True)

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
        cancel = bool((body.get("spec") or {}).get("cancel"))
        if cancel and uid not in self._over:
            if await self.lifecycle.close(
                uid, reason="Canceled", message="spec.cancel is true", deleted=False
            ):
                self.wake()
            self._over.add(uid)  # canceled now, or over already

    async def on_taskrun_deleted(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        if await self.lifecycle.close(
            meta["uid"], reason="Deleted", message="the TaskRun was deleted", deleted=True
        ):
            self.wake()
        await self.converge.pods.stop()
        await self.converge.finalizers.remove(body)
        self._recorded.discard(meta["uid"])
        self._over.discard(meta["uid"])

    async def _record(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        spec = TaskRunSpec.model_validate(body.get("spec") or {})
        created = parse_rfc3339(meta.get("creationTimestamp")) or now()
        eligible = spec.not_before
        if spec.delay:
            eligible = created + parse_duration(spec.delay)
        failed = None
        parent_id, parent_name = _parent(meta)
        metadata = _initial_metadata(annotations)
        payload, tags, concurrency_key = spec.payload, spec.tags, spec.concurrency_key
        unstorable = _unstorable(payload, tags, concurrency_key, metadata)
        if unstorable is not None:
            # Recorded as Failed without what Postgres cannot hold: retrying the insert
            # would fail forever and the run would never show why.
            failed = unstorable
            payload, tags, concurrency_key, metadata = None, None, None, None
        task_spec = await self._task_spec(meta["namespace"], spec.task_ref.name)
        if task_spec is not None and failed is None:
            problem = payload_problem(task_spec, spec.payload)
            if problem:
                failed = ("InvalidPayload", problem)
        return await self.lifecycle.record(
            NewRun(
                id=meta["uid"],
                namespace=meta["namespace"],
                name=meta["name"],
                task=spec.task_ref.name,
                generation=meta.get("generation", 1),
                created_at=created,
                concurrency_key=concurrency_key,
                priority=spec.priority,
                payload=payload,
                tags=tags,
                eligible_at=eligible,
                expires_at=created + parse_duration(spec.ttl) if spec.ttl else None,
                scheduled_at=parse_rfc3339(annotations.get(ANNOTATION_SCHEDULED_TIME)),
                metadata=metadata,
                failed=failed,
                parent_id=parent_id,
                parent_name=parent_name,
                cancel_requested=bool(spec.cancel),
            )
        )

    async def _task_spec(self, namespace: str, name: str) -> TaskSpec | None:
        """The Task's spec as last stored; None when it is missing or invalid (the Task's
        own condition then says what is wrong)."""
        known = self._tasks.get((namespace, name))
        if known is not None:
            return known[2]
        task = await self.store.tasks.get(namespace, name)
        if task is None or task.invalid is not None:
            return None
        try:
            return TaskSpec.model_validate(task.spec)
        except ValidationError:
            return None

    async def on_pod(self, event: str, pod: dict[str, Any]) -> None:
        labels = pod.get("metadata", {}).get("labels") or {}
        # The execution's number (pods from before executions existed: the attempt's).
        run_id = labels.get(LABEL_RUN_UID)
        attempt = labels.get(LABEL_EXECUTION) or labels.get(LABEL_ATTEMPT)
        if not run_id or not attempt or not attempt.isdigit():
            return
        key = (run_id, int(attempt))
        await self._pod_changed(event, pod, key)
        phase = (pod.get("status") or {}).get("phase")
        gone = event == "DELETED" or phase in ("Succeeded", "Failed")
        # After the attempt's end above: a slot held for the pod is free now.
        if gone and pods.holds_slot(pod) and await self.store.attempts.pod_gone(*key):
            self.wake()

    async def _pod_changed(self, event: str, pod: dict[str, Any], key: tuple[str, int]) -> None:
        run_id = key[0]
        if event == "DELETED":
            self._seen_running.discard(key)
            self.converge.pods.specs.discard(key)
            if key in self._seen_finished:
                self._seen_finished.discard(key)  # its outcome is recorded; forget the pod
                return
            # Deleted before its attempt ended (by someone, or with its node).
            if await self.lifecycle.end_attempt(run_id, key[1], attempts.pod_deleted()):
                self.wake()
            return
        if key in self._seen_finished:
            return
        started = attempts.started_at(pod)
        if started is not None and key not in self._seen_running:
            await self.lifecycle.started(run_id, key[1], started)
            self._seen_running.add(key)
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            return
        # Only a finished pod needs the attempt's Task spec (which exit codes are final).
        task = await self._attempt_spec(key)
        if task is None:
            return
        outcome = attempts.pod_outcome(pod, task)
        if outcome is not None:
            if await self.lifecycle.end_attempt(run_id, key[1], outcome):
                self.wake()
            self._seen_finished.add(key)
            self._seen_running.discard(key)
            self.converge.pods.specs.discard(key)

    async def _attempt_spec(self, key: tuple[str, int]) -> TaskSpec | None:
        """The Task spec the attempt runs with: kept since its pod was created here, or read
        from the store; None if the attempt is unknown."""
        task = self.converge.pods.specs.get(key)
        if task is not None:
            return task
        raw = await self.store.attempts.task_spec(*key)
        return None if raw is None else TaskSpec.model_validate(raw)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(listen(self.settings.database.url, self.wake, stop))
        publisher = asyncio.create_task(self._publish_loop(stop))
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:
                    log.exception("reconcile pass failed; retrying")
                    await asyncio.sleep(1)
                self._publish.set()
                # Woken meanwhile: the next pass starts at once, and asks nothing first.
                delay = 0.0 if self._wake.is_set() else await self._until_next_wake()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                self._wake.clear()
        finally:
            for task in (listener, publisher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        """Publish what the reconcile passes committed, as soon as one has: a pass that ran
        meanwhile is published by the next round, with whatever else changed by then."""
        tick = self.settings.loop.tick.total_seconds()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish.wait(), timeout=tick)
            self._publish.clear()
            # A moment for the transitions that follow one another (admitted, started,
            # finished) to land in one status patch rather than one each.
            await asyncio.sleep(PUBLISH_COALESCE_SECONDS)
            try:
                await self.publish()
            except Exception:
                log.exception("publishing status and events failed; retrying")
                await asyncio.sleep(1)

    async def _until_next_wake(self) -> float:
        tick = self.settings.loop.tick.total_seconds()
        if self._maintenance_skipped:  # the next pass comes no later than it is due
            tick = min(tick, self._maintained_at + MAINTENANCE_INTERVAL_SECONDS - time.monotonic())
        try:
            due = [
                await self.store.admission.seconds_to_next_eligible(),
                await self.store.waits.seconds_to_next(),
            ]
        except Exception:
            return max(0.0, tick)
        return max(0.0, min([tick, *(s for s in due if s is not None)]))

    async def tick(self) -> None:
        """One pass: admit, create pods, stop pods, then maintenance when it is due (what
        changed is written to Kubernetes by the publisher)."""
        # Admission and pods first: a new run's path to its pod waits for nothing else.
        # (A run past its ttl is never admitted: admission skips it, `expire` ends it.)
        for queue in await self.store.admission.due_queues():
            await self.lifecycle.admit(queue.namespace, queue.task)
        for created in await self.converge.pods.create():
            observe.pod_created(created.namespace, created.task, created.number, created.latency)
        self._maintenance_skipped = (
            time.monotonic() - self._maintained_at < MAINTENANCE_INTERVAL_SECONDS
        )
        if not self._maintenance_skipped:
            self._maintained_at = time.monotonic()
            await self.maintain()
        # Every pass: a cancel's pod goes at once (and those maintenance just timed out).
        await self.converge.pods.stop()

    async def maintain(self) -> None:
        """Expire, resume, time out and fail what is due by the clock (at most every
        MAINTENANCE_INTERVAL_SECONDS; `run` wakes for it when it is skipped)."""
        batch = self.settings.loop.batch_size
        if await self.lifecycle.expire():
            self.wake()
        # Suspended runs whose wait is over are queued again, then admitted like any run
        # (on the next pass, at once).
        resumed = await self.store.waits.resolve_due(batch)
        if resumed:
            self.wake()
        observe.resumed(resumed)
        for due in await self.store.attempts.due_deadlines(batch):
            await self.lifecycle.end_attempt(
                due.run_id, due.number, attempts.timed_out(), kill=True
            )
        # SDK attempts whose heartbeats stopped: frozen or lost with their node. Their slot
        # is released and the attempt failed (retryable) in one transaction; the pod is
        # then removed at once, without grace.
        for due in await self.store.attempts.due_stalls(batch):
            assert due.heartbeat_timeout is not None
            outcome = attempts.stalled(due.heartbeat_timeout)
            await self.lifecycle.end_attempt(
                due.run_id, due.number, outcome, kill=True, kill_grace=0
            )
        for due in await self.store.attempts.due_pending(batch):
            pod = await self.converge.pods.get(due.namespace, due.pod_name)
            outcome = attempts.not_started(pod)
            await self.lifecycle.end_attempt(due.run_id, due.number, outcome, kill=True)
        await self.converge.finalizers.retry()
        await self.converge.webhooks.sync()

    async def publish(self) -> None:
        """Make TaskRun and Task status and Events show what was committed."""
        for orphan in await self.converge.status.push_runs():
            # The TaskRun is gone (deleted while we were not looking): close its record.
            if await self.lifecycle.close(
                orphan.id, reason="Deleted", message="the TaskRun no longer exists", deleted=True
            ):
                self.wake()
        await self.converge.events.post()
        counts = await self.store.tasks.counts()
        observe.task_counts(counts)
        await self.converge.status.push_tasks(counts)
