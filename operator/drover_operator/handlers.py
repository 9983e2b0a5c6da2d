"""kopf handlers: thin translations of watch events into calls on the engine.

Only the active replica (kopf peering) runs these. Raw event handlers are used on purpose:
they cost no extra API calls for kopf's progress bookkeeping, and every engine input is
idempotent, so replayed or repeated events are harmless.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf

from drover.protocol.names import GROUP, LABEL_RUN_UID, VERSION
from drover_operator.engine.runs import Engine


def _object(event: kopf.RawEvent) -> dict[str, Any]:
    return cast(dict[str, Any], event["object"])


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: Drover has only raw event handlers, which never look at a diff, yet
    kopf builds an object's "essence" (a deep copy of the whole body) on every event to
    compute one. Nothing is stored, nothing is copied."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _engine(memo: Any) -> Engine:
    engine: Engine = memo.engine
    return engine


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our resources' status belongs to the operator's own writers; kopf keeps no state there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300


@kopf.on.event(GROUP, VERSION, "tasks")
async def task_event(*, type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    body = _object(event)
    if type == "DELETED":
        await _engine(memo).on_task_deleted(body["metadata"]["namespace"], body["metadata"]["name"])
    else:
        await _engine(memo).on_task(body)


@kopf.on.event(GROUP, VERSION, "taskruns")
async def taskrun_event(*, type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        await _engine(memo).on_taskrun_deleted(_object(event))
    else:
        await _engine(memo).on_taskrun(_object(event))


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN_UID: kopf.PRESENT})
async def pod_event(*, type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    await _engine(memo).on_pod(type or "MODIFIED", _object(event))
