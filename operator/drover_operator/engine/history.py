"""History cleanup: what finished runs leave in the cluster, and how long Postgres keeps it.

- TaskRuns beyond their Task's `history` (`keepSucceeded`, `keepFailed`, newest kept, or
  older than `ttlAfterFinished`) are deleted from the cluster; their records stay.
- Pods of finished runs are deleted `DROVER_POD_RETENTION` after the run finished, so they
  do not pile up in etcd (the run's outcome is in its status and in Postgres).
- Records of runs whose TaskRun is gone are purged `DROVER_HISTORY_RETENTION` after they
  finished. A record never goes before its TaskRun: a TaskRun without one would be recorded
  again, as a new run.

The store selects; the converger deletes. Every step is idempotent and safe on several
replicas at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pydantic import ValidationError

from drover_operator.converge import Converger
from drover_operator.converge.taskruns import Result
from drover_operator.crd import parse_duration
from drover_operator.crd.task import History
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store

log = logging.getLogger(__name__)

_RETRY_DELETE_SECONDS = 60.0  # a TaskRun being deleted (finalizer pending) is not re-deleted
_PURGE_BATCH = 1000


class HistoryCleaner:
    """Applies Tasks' history rules and the operator's retention settings."""

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
        self._deleting: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.loop.history_interval.total_seconds()
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("history cleanup failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

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
        for task in await self.store.history.tasks_with_history():
            try:
                history = History.model_validate(task.history)
            except ValidationError:
                continue
            ttl = history.ttl_after_finished
            runs = await self.store.history.runs_beyond(
                task.namespace,
                task.name,
                keep_succeeded=history.keep_succeeded,
                keep_failed=history.keep_failed,
                ttl=parse_duration(ttl) if ttl is not None else None,
                limit=self.settings.loop.batch_size,
            )
            for run in runs:
                if run.id in self._deleting:
                    continue
                result = await self.converge.taskruns.delete(run)
                if result == Result.DONE:
                    self._deleting[run.id] = time.monotonic()
                elif result == Result.GONE:
                    # Already gone: close the record as deleted, as the finalizer would have.
                    await self.lifecycle.close(
                        run.id,
                        reason="Deleted",
                        message="the TaskRun no longer exists",
                        deleted=True,
                    )

    async def remove_pods(self) -> None:
        """Pods of runs finished more than DROVER_POD_RETENTION ago."""
        runs = await self.store.history.runs_with_pods_left(
            self.settings.retention.pods, self.settings.loop.batch_size
        )
        for run in runs:
            if await self.converge.taskruns.remove_pods(run) == Result.DONE:
                await self.store.history.pods_removed(run.id)

    async def purge(self) -> None:
        """Postgres records of deleted TaskRuns older than DROVER_HISTORY_RETENTION."""
        retention = self.settings.retention.history
        if not retention:
            return  # 0s: keep forever
        await self.store.history.purge(retention, _PURGE_BATCH)
