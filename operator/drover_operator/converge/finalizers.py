"""The finalizer `drover.dev/run-record` that earlier versions put on every TaskRun: removed
once a deleted run's record is closed, so such a TaskRun is never stuck. New TaskRuns get no
finalizer (docs/decisions.md, "No finalizer on TaskRuns"). A patch that fails is retried on
the next pass (with the object read again), so a conflict or a brief API outage never leaves
a deleted TaskRun stuck behind it."""

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
class _Pending:
    namespace: str
    name: str


class Finalizers:
    """Removes `drover.dev/run-record` from TaskRuns."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        # TaskRun UID -> where it is, for removals still to succeed.
        self._pending: dict[str, _Pending] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def remove(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            self._pending.pop(uid, None)
            return
        wanted = [f for f in finalizers if f != FINALIZER]
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
            self._pending[uid] = _Pending(meta["namespace"], meta["name"])
            return
        except NETWORK_ERRORS as exc:
            log.warning("finalizer of %s/%s: %s", meta["namespace"], meta["name"], exc)
            self._pending[uid] = _Pending(meta["namespace"], meta["name"])
            return
        self._pending.pop(uid, None)

    async def retry(self) -> None:
        """Removals that failed before, against the TaskRun as it is now."""
        for uid, pending in list(self._pending.items()):
            try:
                found = await self.client.get(
                    TaskRunResource, pending.name, namespace=pending.namespace
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
            await self.remove(body)
