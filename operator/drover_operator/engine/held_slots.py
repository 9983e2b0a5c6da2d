"""Slots held for pods that are gone, found by asking: the backstop of `Engine.on_pod`.

A Task with `concurrency.slotRelease: PodGone` keeps an ended attempt's slot until its pod is
seen terminated or deleted. The pod watch usually says so at once; this loop covers what a
watch cannot: a pod deleted while no operator watched, and a pod that was never created (the
attempt ended first, canceled or timed out while pending). Every `SWEEP_INTERVAL` it reads the
pods of attempts that ended at least `SETTLED` ago, so that a pod creation in flight when the
attempt ended has landed before its absence frees the slot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from drover.protocol.names import LABEL_RUN_UID
from drover_operator.converge import Converger
from drover_operator.engine.periodic import every
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store

SWEEP_INTERVAL = dt.timedelta(seconds=5)
SETTLED = dt.timedelta(seconds=10)


class HeldSlots:
    """Frees the slots held for pods that no longer run."""

    def __init__(
        self,
        settings: OperatorSettings,
        store: Store,
        converger: Converger,
        freed: Callable[[], None],
        interval: dt.timedelta = SWEEP_INTERVAL,
    ) -> None:
        self.batch = settings.loop.batch_size
        self.store = store
        self.converge = converger
        self.freed = freed  # slots were freed: admission may have work
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, stop, self.sweep, "looking for slots held by gone pods")

    async def sweep(self) -> int:
        """Free the slots of gone pods; returns how many were freed."""
        freed = 0
        for held in await self.store.attempts.held_slots(SETTLED, self.batch):
            pod = await self.converge.pods.get(held.namespace, held.pod_name)
            if pod is not None:
                labels = (pod.get("metadata") or {}).get("labels") or {}
                phase = (pod.get("status") or {}).get("phase")
                if labels.get(LABEL_RUN_UID) == held.run_id and phase not in (
                    "Succeeded",
                    "Failed",
                ):
                    continue  # still there, still running: the slot stays held
            if await self.store.attempts.pod_gone(held.run_id, held.number):
                freed += 1
        if freed:
            self.freed()
        return freed
