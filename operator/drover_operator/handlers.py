"""kopf handlers: thin translations of watch events into calls on the engine.

Only the active replica (kopf peering) runs these. Raw event handlers are used on purpose:
they cost no extra API calls for kopf's progress bookkeeping, and every engine input is
idempotent, so replayed or repeated events are harmless. kopf delivers a raw event once and
does not retry its handler, so each handler retries by itself (`_until_handled`): a pod's end
seen while Postgres restarts would otherwise be lost for good (found by the chaos suite).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf

from drover.protocol.names import GROUP, LABEL_RUN_UID, VERSION
from drover_operator.engine.runs import Engine

log = logging.getLogger(__name__)

# How long one event is retried before it is given up (then only a restart replays it).
_RETRY_FOR_S = 600.0


async def _until_handled(what: str, handle: Callable[[], Awaitable[None]]) -> None:
    """Run `handle` until it succeeds (store or API briefly down), backing off to 5 s."""
    deadline, delay = time.monotonic() + _RETRY_FOR_S, 0.2
    while True:
        try:
            await handle()
            return
        except Exception:
            if time.monotonic() > deadline:
                log.exception("handling %s failed for %.0fs; giving up", what, _RETRY_FOR_S)
                return
            log.warning("handling %s failed; retrying in %.1fs", what, delay, exc_info=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _name(event: kopf.RawEvent) -> str:
    meta = _object(event).get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


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
    # Only pods of runs, filtered by the API server: the handler's `labels=` filter alone is
    # applied after kopf has received and processed every pod event of the cluster (a burst
    # of 500 Job pods cost the idle operator 2.5 s of CPU).
    settings.watching.label_selectors["", "v1", "pods"] = LABEL_RUN_UID


@kopf.on.event(GROUP, VERSION, "tasks")
async def task_event(*, type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    body = _object(event)
    engine = _engine(memo)

    async def handle() -> None:
        if type == "DELETED":
            await engine.on_task_deleted(body["metadata"]["namespace"], body["metadata"]["name"])
        else:
            await engine.on_task(body)

    await _until_handled(f"Task {_name(event)}", handle)


@kopf.on.event(GROUP, VERSION, "taskruns")
async def taskrun_event(*, type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    body = _object(event)
    engine = _engine(memo)

    async def handle() -> None:
        if type == "DELETED":
            await engine.on_taskrun_deleted(body)
        else:
            await engine.on_taskrun(body)

    await _until_handled(f"TaskRun {_name(event)}", handle)


@kopf.on.event("", "v1", "pods", labels={LABEL_RUN_UID: kopf.PRESENT})
async def pod_event(*, type: str | None, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    body, engine = _object(event), _engine(memo)

    async def handle() -> None:
        await engine.on_pod(type or "MODIFIED", body)

    await _until_handled(f"pod {_name(event)}", handle)
