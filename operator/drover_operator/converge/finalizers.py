"""The operator's finalizer on TaskRuns: added when a run is first recorded, removed once a
deleted run's record is closed. A patch that fails is retried on the next pass (with the
object read again), so a conflict or a brief API outage never leaves a run without its
finalizer, or a deleted TaskRun stuck behind it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from drover.protocol.names import FINALIZER
from drover_operator.kube import NETWORK_ERRORS, TaskRunResource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Wanted:
    namespace: str
    name: str
    present: bool


class Finalizers:
    """Adds and removes `drover.dev/run-record` on TaskRuns."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        # TaskRun UID -> what its finalizer should be, for patches still to succeed.
        self._pending: dict[str, _Wanted] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def ensure(self, body: dict[str, Any]) -> None:
        """Add the finalizer to a TaskRun that is not being deleted."""
        await self._converge(body, present=True)

    async def remove(self, body: dict[str, Any]) -> None:
        await self._converge(body, present=False)

    async def retry(self) -> None:
        """Patches that failed before, against the TaskRun as it is now."""
        for uid, wanted in list(self._pending.items()):
            try:
                found = await self.client.get(
                    TaskRunResource, wanted.name, namespace=wanted.namespace
                )
            except ApiError as exc:
                if exc.status.code == 404:
                    self._pending.pop(uid, None)
                continue
            except NETWORK_ERRORS:
                continue
            if found.metadata is None or found.metadata.uid != uid:
                self._pending.pop(uid, None)  # gone, and the name reused
                continue
            body: dict[str, Any] = found.to_dict()  # type: ignore[no-untyped-call]
            await self._converge(body, present=wanted.present)

    async def _converge(self, body: dict[str, Any], *, present: bool) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        finalizers = list(meta.get("finalizers") or [])
        if present and (FINALIZER in finalizers or meta.get("deletionTimestamp")):
            self._pending.pop(uid, None)
            return
        if not present and FINALIZER not in finalizers:
            self._pending.pop(uid, None)
            return
        wanted = [*finalizers, FINALIZER] if present else [f for f in finalizers if f != FINALIZER]
        # resourceVersion makes this a compare-and-swap: another writer's finalizer is kept.
        patch = {"metadata": {"finalizers": wanted, "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.client.patch(
                TaskRunResource,
                meta["name"],
                patch,
                namespace=meta["namespace"],
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code == 404:
                self._pending.pop(uid, None)
                return
            if exc.status.code != 409:  # 409: changed meanwhile, read again next pass
                log.warning("finalizer of %s/%s: %s", meta["namespace"], meta["name"], exc)
            self._pending[uid] = _Wanted(meta["namespace"], meta["name"], present)
            return
        except NETWORK_ERRORS as exc:
            log.warning("finalizer of %s/%s: %s", meta["namespace"], meta["name"], exc)
            self._pending[uid] = _Wanted(meta["namespace"], meta["name"], present)
            return
        self._pending.pop(uid, None)
