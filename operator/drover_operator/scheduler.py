"""The schedule loop: creates a TaskRun for each due tick of every Task with a valid,
non-suspended schedule, under its concurrencyPolicy.

Durable first, like the rest of the operator. Per Task, one transaction (under an advisory
lock, so replicas take turns) decides about the ticks since the cursor, records the runs to
create or cancel, and moves the cursor; only then are TaskRuns created and `spec.cancel`
patched, from those records (an outbox), until each succeeded. Run names are deterministic
per tick, so a repeated create after a crash meets `AlreadyExists` and adopts the run. Times
come from Postgres' clock, so replicas agree on what is due.

Scheduled runs are owned by their Task (controller reference, like a CronJob's Jobs):
deleting the Task deletes them, and cancels those still running. Their records stay in
Postgres like every run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.types import PatchType
from psycopg.types.json import Jsonb

from drover_operator import metrics
from drover_operator.crd import API_VERSION, TaskSpec, parse_duration
from drover_operator.crd.task import Schedule
from drover_operator.events import post_event
from drover_operator.kube import TaskResource, TaskRunResource
from drover_operator.pods import label_value
from drover_operator.schedules import (
    ANNOTATION_SCHEDULED_TIME,
    COUNT_CAP,
    LABEL_SCHEDULE,
    CronSchedule,
    ScheduleError,
    decide,
    rfc3339,
    run_name,
)
from drover_operator.settings import Settings
from drover_operator.store import schedule_queries as sq
from drover_operator.store.db import Connection, transaction
from drover_operator.store.runs import Store

log = logging.getLogger(__name__)

_BATCH = 200
_RECHECK_SECONDS = 30.0  # how often an unrecorded scheduled run is looked up in the API
_NETWORK = (ApiError, httpx2.HTTPError)

EventSink = Callable[[str, str, str], Awaitable[None]]


def _key(schedule: Schedule) -> str:
    """What restarts the cursor when changed: ticks before such a change never catch up."""
    return f"{schedule.cron}\n{schedule.timezone}\n{schedule.suspend}"


class Scheduler:
    def __init__(self, settings: Settings, store: Store, client: AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self._status_cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._looked_up: dict[tuple[str, str], float] = {}
        self._failed = False

    async def run(self, stop: asyncio.Event) -> None:
        # No LISTEN: the engine's wake-ups fire for every run event. Polling every tick is
        # soon enough for Task changes, and the loop wakes exactly when a tick is due.
        while not stop.is_set():
            delay = self.settings.tick_seconds
            try:
                await self.tick()
                if not self._failed:
                    delay = await self._until_next_due()
            except Exception:
                log.exception("schedule pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _until_next_due(self) -> float:
        rows = await self.store.fetch(sq.NEXT_DUE)
        wait: float | None = rows[0]["wait"] if rows else None
        tick = self.settings.tick_seconds
        # A few milliseconds past the tick, so Postgres' clock agrees it is due.
        return tick if wait is None else max(0.005, min(tick, wait + 0.005))

    async def tick(self) -> None:
        """One pass: decide due ticks, then act on the decisions and publish them."""
        [row] = await self.store.fetch(sq.DB_NOW)
        now: dt.datetime = row["now"]
        self._failed = False
        await self._settle_runs()
        for task in await self.store.fetch(sq.TASKS_TO_SCHEDULE, (now,)):
            created = None
            if task["fresh"]:  # the cursor starts at the Task's creation
                created = await self._task_created(task["namespace"], task["name"])
            try:
                await self.decide(task["namespace"], task["name"], now, created)
            except Exception:
                self._failed = True  # retried after a tick, not at once
                log.exception("schedule of %s/%s", task["namespace"], task["name"])
        for stale in await self.store.fetch(sq.DROP_STALE_SCHEDULES):
            await self._patch_status(stale["namespace"], stale["task"], None, None)
            self._status_cache.pop((stale["namespace"], stale["task"]), None)
        await self._cancel_runs()  # Replace: the old run goes first
        await self._create_runs()
        await self._post_events()
        await self._push_statuses()

    # -- decisions (one transaction per Task) -------------------------------------------------

    async def decide(
        self, namespace: str, name: str, now: dt.datetime, created: dt.datetime | None = None
    ) -> None:
        async with transaction(self.store.pool) as conn:
            await conn.execute(sq.SCHEDULE_LOCK, (f"drover.schedule/{namespace}/{name}",))
            task = await (await conn.execute(sq.GET_TASK, (namespace, name))).fetchone()
            if task is None or "schedule" not in task["spec"]:
                return
            row = await (await conn.execute(sq.GET_SCHEDULE, (namespace, name))).fetchone()
            fresh = row is None or row["task_uid"] != task["uid"]
            if (
                row is not None
                and not fresh
                and row["generation"] == task["generation"]
                and (row["next_at"] is None or row["next_at"] > now)
            ):
                return  # nothing due: another replica decided first
            ticks = await self._decide(
                conn, namespace, name, task, None if fresh else row, now, created
            )
        # Committed: count the decision.
        if ticks is not None:
            missed, result = ticks
            if missed:
                metrics.SCHEDULE_MISSED.labels(namespace, name).inc(missed)
            if result is not None:
                metrics.SCHEDULE_TICKS.labels(namespace, name, result).inc()

    async def _decide(
        self,
        conn: Connection,
        namespace: str,
        name: str,
        task: dict[str, Any],
        row: dict[str, Any] | None,
        now: dt.datetime,
        created: dt.datetime | None,
    ) -> tuple[int, str | None] | None:
        """Decide the Task's due tick; (ticks missed, result of the tick run or None)."""
        uid = task["uid"]
        record: dict[str, Any] = {
            "namespace": namespace,
            "task": name,
            "task_uid": uid,
            "generation": task["generation"],
            "schedule_key": "",
            "problem": None,
            "cursor_at": row["cursor_at"] if row else None,
            "next_at": None,
            "last_schedule_time": row["last_schedule_time"] if row else None,
        }

        async def event(kind: str, reason: str, message: str) -> None:
            await conn.execute(
                sq.INSERT_TASK_EVENT, (namespace, name, uid, kind, reason, message[:1024])
            )

        if row is None:
            record["cursor_at"] = created or now
            self._status_cache.pop((namespace, name), None)
        if task["invalid"] is not None:
            # No run of it could start (its Ready condition says why): runs piling up for
            # every tick would all start at once when it is fixed. Decided again then.
            await conn.execute(sq.UPSERT_SCHEDULE, record)
            return None
        spec = TaskSpec.model_validate(task["spec"])
        schedule = spec.schedule
        assert schedule is not None
        record["schedule_key"] = key = _key(schedule)
        # Ticks before the Task existed, or before its cron, zone or suspend last changed,
        # are never caught up.
        if row is not None and (row["schedule_key"] != key or row["cursor_at"] is None):
            record["cursor_at"] = now
        try:
            cron = CronSchedule.parse(schedule.cron, schedule.timezone, now)
        except ScheduleError as exc:
            record["problem"] = problem = (
                f"{exc.reason}: {exc.message}; the schedule creates no runs"
                " (TaskRuns created directly still run)"
            )
            if row is None or row["problem"] != problem:
                await event("Warning", exc.reason, exc.message)
            await conn.execute(sq.UPSERT_SCHEDULE, record)
            return None
        if schedule.suspend:
            await conn.execute(sq.UPSERT_SCHEDULE, record)
            return None
        deadline = (
            parse_duration(schedule.starting_deadline) if schedule.starting_deadline else None
        )
        decision = decide(cron, record["cursor_at"], now, deadline)
        record["cursor_at"], record["next_at"] = decision.cursor, decision.next_at
        if decision.missed:
            plus = "+" if decision.missed >= COUNT_CAP - 1 else ""
            since = rfc3339(decision.first_missed or decision.cursor)
            missed = f"{decision.missed}{plus} tick(s) missed since {since}"
            if decision.too_late:
                await event(
                    "Warning",
                    "MissedSchedule",
                    f"{missed}; the latest, {rfc3339(decision.cursor)}, is more than"
                    f" startingDeadline {schedule.starting_deadline} old: no run",
                )
            else:
                await event("Warning", "MissedSchedule", f"{missed}; one run for the latest only")
        run_at = decision.run_at
        result = None
        if run_at:
            result = await self._start(conn, namespace, name, uid, schedule, cron, run_at, event)
            if result != "skipped":
                record["last_schedule_time"] = run_at
        await conn.execute(sq.UPSERT_SCHEDULE, record)
        return decision.missed, result

    async def _start(
        self,
        conn: Connection,
        namespace: str,
        name: str,
        uid: Any,
        schedule: Schedule,
        cron: CronSchedule,
        tick: dt.datetime,
        event: EventSink,
    ) -> str:
        """Record a run for `tick`, under the schedule's concurrencyPolicy: `started`,
        `replaced` (older runs are canceled) or `skipped`."""
        run = run_name(name, tick, with_seconds=cron.with_seconds)
        rows = await (await conn.execute(sq.OPEN_SCHEDULED_RUNS, (namespace, name))).fetchall()
        unfinished = [r["name"] for r in rows]
        policy = schedule.concurrency_policy
        if unfinished and policy == "Forbid":
            await event(
                "Normal",
                "ScheduleSkipped",
                f"tick {rfc3339(tick)} skipped: {', '.join(unfinished[:5])} still unfinished"
                " (concurrencyPolicy Forbid)",
            )
            return "skipped"
        if unfinished and policy == "Replace":
            await conn.execute(sq.REQUEST_CANCEL, (namespace, unfinished))
            await event(
                "Normal",
                "ScheduleReplaced",
                f"canceling {', '.join(unfinished[:5])} for {run} (concurrencyPolicy Replace)",
            )
        await conn.execute(
            sq.INSERT_SCHEDULED_RUN,
            (namespace, run, name, uid, tick, Jsonb(schedule.payload)),
        )
        await event("Normal", "Scheduled", f"created TaskRun {run} for {rfc3339(tick)}")
        return "replaced" if unfinished and policy == "Replace" else "started"

    async def _task_created(self, namespace: str, name: str) -> dt.datetime | None:
        try:
            task = await self.client.get(TaskResource, name, namespace=namespace)
        except _NETWORK as exc:
            log.debug("reading Task %s/%s: %s", namespace, name, exc)
            return None
        return task.metadata.creationTimestamp if task.metadata else None

    # -- acting on decisions --------------------------------------------------------------

    async def _settle_runs(self) -> None:
        """Scheduled runs that finished, or whose TaskRun vanished unrecorded, no longer
        count for concurrencyPolicy."""
        await self.store.execute(sq.SETTLE_FINISHED)
        await self.store.execute(sq.SETTLE_ORPHANED)
        now = time.monotonic()
        self._looked_up = {k: t for k, t in self._looked_up.items() if now - t < _RECHECK_SECONDS}
        for row in await self.store.fetch(sq.UNRECORDED_SCHEDULED_RUNS, (_BATCH,)):
            key = (row["namespace"], row["name"])
            if key in self._looked_up:
                continue
            self._looked_up[key] = now
            try:
                found = await self.client.get(TaskRunResource, key[1], namespace=key[0])
            except ApiError as exc:
                if exc.status.code != 404:
                    continue
                found = None
            except httpx2.HTTPError:
                continue
            if found is None or found.metadata is None or found.metadata.uid != str(row["run_uid"]):
                await self.store.execute(sq.MARK_DONE, key)

    async def _create_runs(self) -> None:
        for row in await self.store.fetch(sq.RUNS_TO_CREATE, (_BATCH,)):
            namespace, name = row["namespace"], row["name"]
            scheduled = rfc3339(row["scheduled_at"])
            spec: dict[str, Any] = {"taskRef": {"name": row["task"]}}
            if row["payload"] is not None:
                spec["payload"] = row["payload"]
            body = TaskRunResource(
                metadata=ObjectMeta(
                    name=name,
                    namespace=namespace,
                    labels={LABEL_SCHEDULE: label_value(row["task"])},
                    annotations={ANNOTATION_SCHEDULED_TIME: scheduled},
                    ownerReferences=[
                        OwnerReference(
                            apiVersion=API_VERSION,
                            kind="Task",
                            name=row["task"],
                            uid=str(row["task_uid"]),
                            controller=True,
                        )
                    ],
                ),
                spec=spec,
            )
            try:
                created = await self.client.create(body)
                uid = created.metadata.uid if created.metadata else None
            except ApiError as exc:
                if exc.status.code in (400, 422):  # refused for good: never retried
                    await self._give_up(row, f"refused: {exc.status.message}")
                    continue
                if exc.status.code != 409:
                    log.warning("creating %s/%s: %s", namespace, name, exc.status.message)
                    continue
                try:
                    uid = await self._adopt(namespace, name, scheduled)
                except _NETWORK:
                    continue  # retried next pass
            except httpx2.HTTPError as exc:
                log.warning("creating %s/%s: %s", namespace, name, exc)
                continue
            if uid is None:
                await self._give_up(row, "another TaskRun has that name")
                continue
            await self.store.execute(sq.SET_RUN_UID, (uid, namespace, name))

    async def _adopt(self, namespace: str, name: str, scheduled: str) -> str | None:
        """AlreadyExists: ours if it is the run for the same tick (created before a crash,
        or by another replica), else None."""
        existing = await self.client.get(TaskRunResource, name, namespace=namespace)
        meta = existing.metadata
        annotations = (meta.annotations if meta else None) or {}
        if meta is None or annotations.get(ANNOTATION_SCHEDULED_TIME) != scheduled:
            return None
        return meta.uid

    async def _give_up(self, row: dict[str, Any], why: str) -> None:
        namespace, name, task = row["namespace"], row["name"], row["task"]
        message = f"TaskRun {name} for {rfc3339(row['scheduled_at'])} not created: {why}"
        log.warning("%s/%s: %s", namespace, task, message)
        async with transaction(self.store.pool) as conn:
            await conn.execute(sq.MARK_DONE, (namespace, name))
            await conn.execute(
                sq.INSERT_TASK_EVENT,
                (namespace, task, row["task_uid"], "Warning", "ScheduleFailed", message[:1024]),
            )

    async def _cancel_runs(self) -> None:
        """concurrencyPolicy Replace: the replaced runs get `spec.cancel: true`."""
        for row in await self.store.fetch(sq.RUNS_TO_CANCEL, (_BATCH,)):
            key = (row["namespace"], row["name"])
            # The UID makes this a precondition: a newer TaskRun of the same name is untouched.
            patch = {"metadata": {"uid": str(row["run_uid"])}, "spec": {"cancel": True}}
            try:
                await self.client.patch(
                    TaskRunResource, key[1], patch, namespace=key[0], patch_type=PatchType.MERGE
                )
            except ApiError as exc:
                if exc.status.code in (404, 409, 422):
                    await self.store.execute(sq.MARK_DONE, key)
                else:
                    log.warning("canceling %s/%s: %s", *key, exc.status.message)
                continue
            except httpx2.HTTPError as exc:
                log.warning("canceling %s/%s: %s", *key, exc)
                continue
            await self.store.execute(sq.CANCEL_SENT, key)

    async def _post_events(self) -> None:
        posted = []
        for row in await self.store.fetch(sq.UNPOSTED_TASK_EVENTS, (_BATCH,)):
            at: dt.datetime = row["at"]
            if await post_event(
                self.client,
                kind="Task",
                name=row["task"],
                namespace=row["namespace"],
                uid=str(row["task_uid"]),
                # Unique per event (one transaction's events share `at`), the same on a retry.
                event_name=f"{row['task'][:200]}.{int(at.timestamp() * 1e9):x}.{row['id']:x}",
                type=row["type"],
                reason=row["reason"],
                message=row["message"],
                at=at,
            ):
                posted.append(row["id"])
        if posted:
            await self.store.execute(sq.MARK_TASK_EVENTS_POSTED, (posted,))

    async def _push_statuses(self) -> None:
        for row in await self.store.fetch(sq.SCHEDULE_STATUSES):
            await self._patch_status(
                row["namespace"], row["task"], row["last_schedule_time"], row["next_at"]
            )

    async def _patch_status(
        self, namespace: str, name: str, last: dt.datetime | None, upcoming: dt.datetime | None
    ) -> None:
        """`lastScheduleTime`/`nextScheduleTime` only: a merge patch leaves the fields the
        reconcile loop writes alone."""
        status = {
            "lastScheduleTime": rfc3339(last) if last else None,
            "nextScheduleTime": rfc3339(upcoming) if upcoming else None,
        }
        key = (namespace, name)
        if self._status_cache.get(key) == status:
            return
        try:
            await self.client.patch(
                TaskResource.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except _NETWORK as exc:
            log.debug("schedule status of %s/%s: %s", namespace, name, exc)
            return
        self._status_cache[key] = status
