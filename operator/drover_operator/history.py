"""History cleanup: what finished runs leave in the cluster, and how long Postgres keeps it.

- TaskRuns beyond their Task's `history` (`keepSucceeded`, `keepFailed`, newest kept, or
  older than `ttlAfterFinished`) are deleted from the cluster; their records stay.
- Pods of finished runs are deleted `DROVER_POD_RETENTION` after the run finished, so they
  do not pile up in etcd (the run's outcome is in its status and in Postgres).
- Records of runs whose TaskRun is gone are purged `DROVER_HISTORY_RETENTION` after they
  finished. A record never goes before its TaskRun: a TaskRun without one would be recorded
  again, as a new run.

Every step is idempotent and safe on several replicas at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Pod
from pydantic import ValidationError

from drover_operator.crd import parse_duration
from drover_operator.crd.task import History
from drover_operator.kube import TaskRunResource
from drover_operator.pods import LABEL_RUN_UID
from drover_operator.settings import Settings
from drover_operator.store import schedule_queries as sq
from drover_operator.store.runs import Store

log = logging.getLogger(__name__)

_BATCH = 200
_RETRY_DELETE_SECONDS = 60.0  # a TaskRun being deleted (finalizer pending) is not re-deleted


class HistoryCleaner:
    def __init__(self, settings: Settings, store: Store, client: AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self._deleting: dict[str, float] = {}

    @property
    def interval(self) -> float:
        return max(1.0, 5 * self.settings.tick_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("history cleanup failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def tick(self) -> None:
        await self.delete_runs()
        await self.remove_pods()
        await self.purge()

    async def delete_runs(self) -> None:
        """TaskRuns beyond their Task's history limits."""
        now = time.monotonic()
        self._deleting = {
            k: t for k, t in self._deleting.items() if now - t < _RETRY_DELETE_SECONDS
        }
        for task in await self.store.fetch(sq.TASKS_WITH_HISTORY):
            try:
                history = History.model_validate(task["history"])
            except ValidationError:
                continue
            ttl = history.ttl_after_finished
            params = {
                "namespace": task["namespace"],
                "task": task["name"],
                "keep_succeeded": history.keep_succeeded,
                "keep_failed": history.keep_failed,
                "ttl": parse_duration(ttl) if ttl is not None else None,
                "limit": _BATCH,
            }
            async with self.store.pool.connection() as conn:
                rows = await (await conn.execute(sq.RUNS_BEYOND_HISTORY, params)).fetchall()
            for run in rows:
                if str(run["id"]) not in self._deleting:
                    await self._delete_run(run)

    async def _delete_run(self, run: dict[str, Any]) -> None:
        run_id, name, namespace = str(run["id"]), run["name"], run["namespace"]
        try:
            # A newer TaskRun may have the same name: delete only the one with this UID.
            found = await self.client.get(TaskRunResource, name, namespace=namespace)
            if found.metadata is not None and found.metadata.uid == run_id:
                await self.client.delete(TaskRunResource, name, namespace=namespace)
                self._deleting[run_id] = time.monotonic()
                return
        except ApiError as exc:
            if exc.status.code != 404:
                log.warning("deleting TaskRun %s/%s: %s", namespace, name, exc.status.message)
                return
        except httpx2.HTTPError as exc:
            log.warning("deleting TaskRun %s/%s: %s", namespace, name, exc)
            return
        # Already gone: close the record as deleted, as the finalizer would have.
        await self.store.close(
            run_id, reason="Deleted", message="the TaskRun no longer exists", deleted=True
        )

    async def remove_pods(self) -> None:
        """Pods of runs finished more than DROVER_POD_RETENTION ago."""
        retention = parse_duration(self.settings.pod_retention)
        for run in await self.store.fetch(sq.RUNS_WITH_PODS_LEFT, (retention, _BATCH)):
            run_id = str(run["run_id"])
            try:
                # By the run's UID label: pod names repeat when a TaskRun name is reused.
                pods = [
                    pod
                    async for pod in self.client.list(
                        Pod, namespace=run["namespace"], labels={LABEL_RUN_UID: run_id}
                    )
                ]
                for pod in pods:
                    if pod.metadata is not None and pod.metadata.name:
                        with contextlib.suppress(ApiError):  # 404: already gone
                            await self.client.delete(
                                Pod, pod.metadata.name, namespace=run["namespace"]
                            )
            except (ApiError, httpx2.HTTPError) as exc:
                log.warning("removing pods of run %s: %s", run_id, exc)
                continue
            await self.store.execute(sq.PODS_REMOVED, (run_id,))

    async def purge(self) -> None:
        """Postgres records of deleted TaskRuns older than DROVER_HISTORY_RETENTION."""
        retention = parse_duration(self.settings.history_retention)
        if not retention:
            return  # 0s: keep forever
        await self.store.execute(sq.PURGE_RUNS, (retention, 1000))
        await self.store.execute(sq.PURGE_SCHEDULE_RUNS, (retention,))
        await self.store.execute(sq.PURGE_TASK_EVENTS, (retention,))
