"""Decisions about runs, each one store transaction with the lifecycle's rules, counted and
traced after it committed. The engine (watch events, deadlines) and the run API (a runner's
result) both decide through here."""

from __future__ import annotations

import datetime as dt
import logging

from drover_operator.domain.attempts import Outcome
from drover_operator.engine import observe
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.store import Store
from drover_operator.store.admission import Admitted
from drover_operator.store.attempts import AttemptEnded
from drover_operator.store.runs import NewRun

log = logging.getLogger(__name__)


class RunLifecycle:
    """Records, admits, starts, ends, cancels and expires runs."""

    def __init__(self, store: Store, policy: LifecyclePolicy) -> None:
        self.store = store
        self.policy = policy

    async def record(self, run: NewRun) -> bool:
        """Record a TaskRun the first time it is seen; False if it already was."""
        recorded = await self.store.runs.record(run)
        if recorded:
            observe.recorded(run)
        return recorded

    async def admit(self, namespace: str, task: str) -> list[Admitted]:
        admitted = await self.store.admission.admit(namespace, task, self.policy)
        if admitted:
            observe.admitted(namespace, task, admitted)
            log.debug("admitted %d runs of %s/%s", len(admitted), namespace, task)
        return admitted

    async def started(self, run_id: str, number: int, at: dt.datetime) -> bool:
        return await self.store.attempts.running(run_id, number, at)

    async def end_attempt(
        self,
        run_id: str,
        number: int,
        outcome: Outcome,
        *,
        kill: bool = False,
        kill_grace: int | None = None,
    ) -> AttemptEnded | None:
        """End an active attempt: retry or finish the run; None if it had already ended."""
        ended = await self.store.attempts.finish(
            run_id, number, outcome, self.policy.end, kill=kill, kill_grace=kill_grace
        )
        if ended is not None:
            observe.attempt_ended(ended)
        return ended

    async def close(self, run_id: str, *, reason: str, message: str, deleted: bool) -> bool:
        """Cancel a run that is not over (its active attempt gives up its slot); with
        `deleted`, also mark its TaskRun gone. False if the run was already over."""
        closed = await self.store.runs.close(
            run_id, reason=reason, message=message, deleted=deleted
        )
        if closed is None:
            return False
        observe.closed(closed, reason, message)
        return True

    async def expire(self) -> bool:
        """Expire runs not started within their ttl; True if any was."""
        expired = await self.store.runs.expire()
        observe.expired(expired)
        return bool(expired)
