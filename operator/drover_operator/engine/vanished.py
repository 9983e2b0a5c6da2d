"""Runs whose TaskRun was deleted while no operator watched: closed, their slot freed.

TaskRuns carry no finalizer (one patch per run, a sixth of the operator's requests; see
docs/decisions.md "No finalizer on TaskRuns"). A deletion the watch reports is handled at once
(`Engine.on_taskrun_deleted`); one that happened while every operator was down, or during a
watch's reconnect, is found here: at startup and then every `SWEEP_INTERVAL`, the unfinished
records are compared with a listing of the TaskRuns, and a record whose TaskRun is missing
from it, and then also from a direct read, is closed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from drover_operator.converge import Converger
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.engine.periodic import every
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store

log = logging.getLogger(__name__)

#: How often the records are compared with the TaskRuns after startup.
SWEEP_INTERVAL = dt.timedelta(seconds=60)


class VanishedRuns:
    """Closes the records of unfinished runs whose TaskRun no longer exists."""

    def __init__(
        self,
        settings: OperatorSettings,
        store: Store,
        lifecycle: RunLifecycle,
        converger: Converger,
        freed: Callable[[], None],
        interval: dt.timedelta = SWEEP_INTERVAL,
    ) -> None:
        self.namespaces = list(settings.watch.namespaces) or None
        self.store = store
        self.lifecycle = lifecycle
        self.converge = converger
        self.freed = freed  # slots were freed: admission may have work
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, stop, self.sweep, "looking for deleted TaskRuns")

    async def sweep(self) -> int:
        """Close what vanished; returns how many runs were closed."""
        # Only records older than the listing: a TaskRun created since may be missing
        # from it. Each candidate is then read by name (a quorum read), so neither a clock
        # skew nor a stale listing can close a run whose TaskRun exists.
        before = dt.datetime.now(dt.UTC)
        listed = await self.converge.taskruns.uids(self.namespaces)
        if listed is None:
            return 0
        closed = 0
        for run in await self.store.runs.unfinished_before(before, self.namespaces):
            if str(run.id) in listed:
                continue
            exists = await self.converge.taskruns.exists(run.namespace, run.name, str(run.id))
            if exists is not False:
                continue
            if await self.lifecycle.close(
                str(run.id),
                reason="Deleted",
                message="the TaskRun no longer exists",
                deleted=True,
            ):
                closed += 1
        if closed:
            self.freed()
            log.info("closed %d runs whose TaskRun was deleted unseen", closed)
        return closed
