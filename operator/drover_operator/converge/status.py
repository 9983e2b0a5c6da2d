"""Status of TaskRuns and Tasks, written from the store's records.

A TaskRun's status is pushed while its record's version is ahead of the last version pushed.
A Task's status is patched when what it shows changed; its Ready condition keeps the
`lastTransitionTime` it had on the Task (also across operator restarts) until its status
changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from drover.protocol.timestamps import now, rfc3339
from drover_operator.domain.records import AttemptSummary, TaskCounts, UnpushedRun
from drover_operator.domain.status import ready_since, task_status, taskrun_status
from drover_operator.kube import NETWORK_ERRORS, PUBLISH_CONCURRENCY, TaskResource, TaskRunResource
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]

#: `status.children` lists this many (all are in the API).
MAX_CHILDREN_IN_STATUS = 1000


class StatusConverger:
    """Writes `status` of TaskRuns and Tasks."""

    def __init__(
        self,
        settings: OperatorSettings,
        store: Store,
        client: AsyncClient,
        writes: asyncio.Semaphore | None = None,
    ) -> None:
        self.writes = writes or asyncio.Semaphore(PUBLISH_CONCURRENCY)
        self.settings = settings
        self.store = store
        self.client = client
        # What each Task's status was last set to (skips patches that change nothing) ...
        self._task_status: dict[TaskKey, dict[str, Any]] = {}
        # ... and its Ready condition as last read from the Task or written.
        self._ready: dict[TaskKey, dict[str, Any] | None] = {}
        self._schedule_status: dict[TaskKey, dict[str, Any]] = {}

    # -- TaskRuns ------------------------------------------------------------------------------

    async def push_runs(self) -> list[UnpushedRun]:
        """Push every TaskRun status that is behind (several at a time; each run's is claimed
        by one replica at a time); returns the runs whose TaskRun is gone (their records are
        for the caller to close)."""
        runs = await self.store.runs.unpushed(self.settings.loop.batch_size)
        if not runs:
            return []
        attempts = await self.store.runs.attempts_of(
            [run.id for run in runs if run.deleted_at is None],
            self.settings.runs.attempts_in_status,
        )

        async def one(run: UnpushedRun) -> bool | None:
            async with self.writes:
                return await self._push(run, attempts.get(str(run.id), []))

        results = await asyncio.gather(*(one(r) for r in runs))
        for run, pushed in zip(runs, results, strict=True):
            if pushed is None:
                await self.store.runs.release_push(run.id)
        # Written, or nothing left to write to: one statement for the whole batch.
        await self.store.runs.mark_pushed_many(
            [
                (run.id, run.version)
                for run, pushed in zip(runs, results, strict=True)
                if pushed is not None
            ]
        )
        return [run for run, pushed in zip(runs, results, strict=True) if pushed is False]

    async def _push(self, run: UnpushedRun, attempts: list[AttemptSummary]) -> bool | None:
        """Write the run's status: True done (or nothing to write), False the TaskRun is gone,
        None failed (retried)."""
        if run.deleted_at is not None:
            return True
        children = (
            await self.store.runs.child_names(run.id, MAX_CHILDREN_IN_STATUS)
            if run.child_count
            else None
        )
        status = taskrun_status(
            run, attempts, output_limit=self.settings.runs.output_limit_bytes, children=children
        )
        try:
            await self.client.patch(
                TaskRunResource.Status,
                run.name,
                {"status": status},
                namespace=run.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            log.warning("status of %s/%s: %s", run.namespace, run.name, exc.status.message)
            return None
        except NETWORK_ERRORS as exc:
            log.warning("status of %s/%s: %s", run.namespace, run.name, exc)
            return None
        return True

    # -- Tasks ---------------------------------------------------------------------------------

    def forget_task(self, namespace: str, name: str, *, deleted: bool = False) -> None:
        """The Task changed: write its status again on the next pass. Deleted: forget it
        (a Task created again under its name starts afresh)."""
        self._task_status.pop((namespace, name), None)
        if deleted:
            self._ready.pop((namespace, name), None)
            self._schedule_status.pop((namespace, name), None)

    async def push_tasks(self, counts: list[TaskCounts]) -> None:
        at = now()
        for row in counts:
            key = (row.namespace, row.name)
            status = task_status(row)
            if self._task_status.get(key) == status:
                continue
            if key not in self._ready:
                # First write since this process started: keep the transition time the
                # Task already shows.
                self._ready[key] = await self._current_ready(key)
            ready = status["conditions"][0]
            ready = {**ready, "lastTransitionTime": ready_since(ready, self._ready[key], at)}
            body = {"status": {**status, "conditions": [ready]}}
            if await self._patch_task(key, body):
                self._task_status[key] = status
                self._ready[key] = ready

    async def _current_ready(self, key: TaskKey) -> dict[str, Any] | None:
        try:
            task = await self.client.get(TaskResource, key[1], namespace=key[0])
        except (ApiError, *NETWORK_ERRORS):
            return None
        status: dict[str, Any] = task.status if isinstance(task.status, dict) else {}
        conditions = status.get("conditions") or []
        found: dict[str, Any] | None = next(
            (c for c in conditions if c.get("type") == "Ready"), None
        )
        return found

    async def push_schedules(
        self, key: TaskKey, last: dt.datetime | None, upcoming: dt.datetime | None
    ) -> None:
        """`lastScheduleTime`/`nextScheduleTime` only: a merge patch leaves the fields the
        reconcile loop writes alone."""
        status = {
            "lastScheduleTime": rfc3339(last) if last else None,
            "nextScheduleTime": rfc3339(upcoming) if upcoming else None,
        }
        if self._schedule_status.get(key) == status:
            return
        if await self._patch_task(key, {"status": status}):
            self._schedule_status[key] = status

    def forget_schedule(self, key: TaskKey) -> None:
        self._schedule_status.pop(key, None)

    async def _patch_task(self, key: TaskKey, body: dict[str, Any]) -> bool:
        try:
            await self.client.patch(
                TaskResource.Status, key[1], body, namespace=key[0], patch_type=PatchType.MERGE
            )
        except (ApiError, *NETWORK_ERRORS) as exc:
            log.debug("status of Task %s/%s: %s", *key, exc)
            return False
        return True
