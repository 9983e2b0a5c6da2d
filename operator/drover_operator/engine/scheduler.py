"""The schedule loop: a TaskRun for each due tick of every Task with a valid, unsuspended
schedule, under its concurrencyPolicy.

Durable first, like the rest of the operator. Per Task, one store transaction (under an
advisory lock, so replicas take turns) decides the ticks since the cursor with the rules in
`domain.scheduling`, records the runs to create or cancel, and moves the cursor; only then
does the converger create TaskRuns and set `spec.cancel`, from those records (an outbox),
until each succeeded. Run names are deterministic per tick, so a repeated create after a
crash meets AlreadyExists and adopts the run. Times come from Postgres' clock, so replicas
agree on what is due.

Scheduled runs are owned by their Task (controller reference, like a CronJob's Jobs):
deleting the Task deletes them, and cancels those still running. Their records stay in
Postgres like every run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time

from drover.protocol.timestamps import rfc3339
from drover_operator.converge import Converger
from drover_operator.converge.taskruns import Result
from drover_operator.domain.scheduling import decide_schedule
from drover_operator.engine import observe
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store

log = logging.getLogger(__name__)

_RECHECK_SECONDS = 30.0  # how often an unrecorded scheduled run is looked up in the API


class Scheduler:
    """Decides schedule ticks through the store and creates their runs through the
    converger."""

    def __init__(self, settings: OperatorSettings, store: Store, converger: Converger) -> None:
        self.settings = settings
        self.store = store
        self.converge = converger
        self._looked_up: dict[tuple[str, str], float] = {}
        self._failed = False

    async def run(self, stop: asyncio.Event) -> None:
        # No LISTEN: the engine's wake-ups fire for every run event. Polling every tick is
        # soon enough for Task changes, and the loop wakes exactly when a tick is due.
        while not stop.is_set():
            delay = self.settings.loop.tick.total_seconds()
            try:
                await self.tick()
                if not self._failed:
                    delay = await self._until_next_due()
            except Exception:
                log.exception("schedule pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _until_next_due(self) -> float:
        wait = await self.store.schedules.seconds_to_next_tick()
        tick = self.settings.loop.tick.total_seconds()
        # A few milliseconds past the tick, so Postgres' clock agrees it is due.
        return tick if wait is None else max(0.005, min(tick, wait + 0.005))

    async def tick(self) -> None:
        """One pass: decide due ticks, then act on the decisions and publish them."""
        now = await self.store.schedules.now()
        self._failed = False
        await self._settle_runs()
        for due in await self.store.schedules.due(now):
            created = None
            if due.fresh:  # the cursor starts at the Task's creation
                created = await self.converge.taskruns.task_created(due.namespace, due.name)
            try:
                await self.decide(due.namespace, due.name, now, created)
            except Exception:
                self._failed = True  # retried after a tick, not at once
                log.exception("schedule of %s/%s", due.namespace, due.name)
        for stale in await self.store.schedules.drop_stale():
            key = (stale.namespace, stale.task)
            await self.converge.status.push_schedules(key, None, None)
            self.converge.status.forget_schedule(key)
        await self._cancel_runs()  # Replace: the old run goes first
        await self._create_runs()
        await self.converge.events.post()
        for status in await self.store.schedules.statuses():
            await self.converge.status.push_schedules(
                (status.namespace, status.task), status.last_schedule_time, status.next_at
            )

    async def decide(
        self, namespace: str, name: str, now: dt.datetime, created: dt.datetime | None = None
    ) -> None:
        decider = functools.partial(decide_schedule, created=created)
        decision = await self.store.schedules.decide(namespace, name, now, decider)
        if decision is not None:
            observe.scheduled(namespace, name, decision.missed, decision.result)

    # -- acting on decisions --------------------------------------------------------------

    async def _settle_runs(self) -> None:
        """Scheduled runs that finished, or whose TaskRun vanished unrecorded, no longer
        count for concurrencyPolicy."""
        await self.store.schedules.settle()
        now = time.monotonic()
        self._looked_up = {k: t for k, t in self._looked_up.items() if now - t < _RECHECK_SECONDS}
        for run in await self.store.schedules.unrecorded(self.settings.loop.batch_size):
            key = (run.namespace, run.name)
            if key in self._looked_up:
                continue
            self._looked_up[key] = now
            assert run.run_uid is not None
            if await self.converge.taskruns.exists(run.namespace, run.name, run.run_uid) is False:
                await self.store.schedules.done(run.namespace, run.name)

    async def _create_runs(self) -> None:
        for run in await self.store.schedules.to_create(self.settings.loop.batch_size):
            result, detail = await self.converge.taskruns.create_scheduled(run)
            if result == Result.DONE:
                await self.store.schedules.created(run.namespace, run.name, detail)
            elif result == Result.REFUSED:
                message = (
                    f"TaskRun {run.name} for {rfc3339(run.scheduled_at)} not created: {detail}"
                )
                log.warning("%s/%s: %s", run.namespace, run.task, message)
                await self.store.schedules.give_up(run, message)

    async def _cancel_runs(self) -> None:
        """concurrencyPolicy Replace: the replaced runs get `spec.cancel: true`."""
        for run in await self.store.schedules.to_cancel(self.settings.loop.batch_size):
            assert run.run_uid is not None
            result = await self.converge.taskruns.cancel(run.namespace, run.name, run.run_uid)
            if result == Result.DONE:
                await self.store.schedules.cancel_sent(run.namespace, run.name)
            elif result == Result.GONE:
                await self.store.schedules.done(run.namespace, run.name)
