"""Kubernetes Events, posted from the store's outbox once the decision that recorded them has
committed: on TaskRuns (a run's history) and on Tasks (schedules)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from drover.protocol.names import API_VERSION
from drover.protocol.timestamps import now
from drover_operator.domain.records import PendingEvent
from drover_operator.kube import NETWORK_ERRORS, PUBLISH_CONCURRENCY
from drover_operator.store import Store
from drover_operator.telemetry import metrics

log = logging.getLogger(__name__)

#: Kubernetes keeps Events for an hour (the API server's `--event-ttl`): one that could not
#: be posted for that long is dropped rather than retried forever.
EVENT_LIFETIME = dt.timedelta(hours=1)
_WARN_EVERY_SECONDS = 60.0


def event_name(event: PendingEvent) -> str:
    """Deterministic, so a retry or a second replica meets AlreadyExists. A run's UID is in
    its events' names: outbox ids restart with a new database, UIDs never repeat."""
    if event.source == "run":
        return f"{event.name[:200]}.{event.uid[:8]}{event.id:x}"
    # One transaction's Task events share `at`: the id tells them apart.
    return f"{event.name[:200]}.{int(event.at.timestamp() * 1e9):x}.{event.id:x}"


def _terminating(exc: ApiError) -> bool:
    """403 because the namespace is being deleted: the Event can never be posted."""
    return "being terminated" in (exc.status.message or "")


class EventPoster:
    """Posts the outbox's Events, oldest first."""

    def __init__(
        self,
        store: Store,
        client: AsyncClient,
        batch_size: int,
        writes: asyncio.Semaphore | None = None,
    ) -> None:
        self.writes = writes or asyncio.Semaphore(PUBLISH_CONCURRENCY)
        self.store = store
        self.client = client
        self.batch_size = batch_size
        self._warned_at = 0.0
        # The reconcile loop and the scheduler both post: one at a time, or both would post
        # the same unposted Events (the second meeting AlreadyExists, a wasted request each).
        self._posting = asyncio.Lock()

    async def post(self) -> None:
        """Post one batch, several at a time (each is independent: a burst of runs must not
        wait behind one another's round trips). A namespace that refused one (missing RBAC)
        or an API server that did not answer is tried again on a later pass."""
        async with self._posting:
            await self._post_batch()

    async def _post_batch(self) -> None:
        events = await self.store.outbox.unposted(self.batch_size)
        if not events:
            return
        forbidden: set[str] = set()  # namespaces where this pass was refused
        unreachable = False

        async def one(event: PendingEvent) -> PendingEvent | None:
            nonlocal unreachable
            async with self.writes:
                if event.namespace in forbidden or unreachable:
                    return None
                code = await self._post(event)
            if code is None or code in (404, 409) or now() - event.at > EVENT_LIFETIME:
                return event
            metrics.EVENTS_NOT_POSTED.labels(str(code)).inc()
            if code == 403:
                # Missing RBAC: said loudly; kept, and retried next pass.
                self._warn_forbidden(event)
                forbidden.add(event.namespace)
            elif code == 0:
                unreachable = True  # no answer from the API server: the rest would wait in vain
            return None

        done = [e for e in await asyncio.gather(*(one(e) for e in events)) if e is not None]
        if done:
            await self.store.outbox.mark_posted(done)

    async def _post(self, event: PendingEvent) -> int | None:
        """None when posted; else the API's status code (0: no answer)."""
        body = Event(
            metadata=ObjectMeta(name=event_name(event), namespace=event.namespace),
            involvedObject=ObjectReference(
                apiVersion=API_VERSION,
                kind=event.kind,
                name=event.name,
                namespace=event.namespace,
                uid=event.uid,
            ),
            type=event.type,
            reason=event.reason,
            message=event.message[:1024],
            firstTimestamp=event.at,
            lastTimestamp=event.at,
            count=1,
            source=EventSource(component="drover-operator"),
            reportingComponent="drover.dev/operator",
            reportingInstance="drover-operator",
        )
        try:
            await self.client.create(body)
        except ApiError as exc:
            if exc.status.code == 403 and _terminating(exc):
                return 404  # as if gone
            if exc.status.code not in (403, 404, 409):
                log.warning("posting event: %s", exc.status.message)
            return exc.status.code or 0
        except NETWORK_ERRORS:
            return 0
        return None

    def _warn_forbidden(self, event: PendingEvent) -> None:
        if time.monotonic() - self._warned_at < _WARN_EVERY_SECONDS:
            return
        self._warned_at = time.monotonic()
        log.warning(
            "cannot post Events in namespace %s: forbidden. The operator's ServiceAccount "
            "needs `create` on `events` (the Helm chart's ClusterRole has it); Events are "
            "kept and retried for %s",
            event.namespace,
            EVENT_LIFETIME,
        )
