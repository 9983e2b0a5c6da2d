"""Make Kubernetes match what the store committed: pods created and stopped, statuses and
Events published. Every action is idempotent and retried on the next pass if it fails."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, codecs
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod
from lightkube.types import PatchType

from drover_operator.crd import API_VERSION, TaskSpec
from drover_operator.kube import FINALIZER, TaskResource, TaskRunResource
from drover_operator.pods import LABEL_RUN_UID, PodRequest, build_pod
from drover_operator.settings import Settings
from drover_operator.status import task_status, taskrun_status
from drover_operator.store import queries as q
from drover_operator.store.runs import Store

log = logging.getLogger(__name__)

_BATCH = 200
_NETWORK = (ApiError, httpx2.HTTPError)


class Converger:
    def __init__(self, settings: Settings, store: Store, client: AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self._task_status_cache: dict[tuple[str, str], dict[str, Any]] = {}

    # -- pods -------------------------------------------------------------------------------

    async def create_pods(self) -> None:
        for row in await self.store.fetch(q.PODS_TO_CREATE, (_BATCH,)):
            task = TaskSpec.model_validate(row["task_spec"])
            manifest = build_pod(
                PodRequest(
                    namespace=row["namespace"],
                    run_name=row["name"],
                    run_uid=str(row["run_id"]),
                    task_name=row["task"],
                    attempt=row["number"],
                    max_attempts=task.retry.max_attempts,
                    task=task,
                    payload=row["payload"],
                )
            )
            try:
                await self.client.create(codecs.from_dict(manifest))
            except ApiError as exc:
                if exc.status.code != 409 or not await self._adoptable(row):
                    log.warning(
                        "creating pod %s/%s: %s",
                        row["namespace"],
                        row["pod_name"],
                        exc.status.message,
                    )
                    continue
            except httpx2.HTTPError as exc:
                log.warning("creating pod %s: %s", row["pod_name"], exc)
                continue
            await self.store.pod_created(str(row["run_id"]), row["number"])

    async def _adoptable(self, row: dict[str, Any]) -> bool:
        """AlreadyExists: ours if it belongs to this run (a crash between deciding and
        creating); a same-named pod of an older, deleted TaskRun is not."""
        pod = await self.get_pod(row["namespace"], row["pod_name"])
        labels = (pod or {}).get("metadata", {}).get("labels") or {}
        return labels.get(LABEL_RUN_UID) == str(row["run_id"])

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = await self.client.get(Pod, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        result: dict[str, Any] = pod.to_dict()
        return result

    async def kill_pods(self) -> None:
        for row in await self.store.fetch(q.PODS_TO_KILL, (_BATCH,)):
            try:
                await self.client.delete(Pod, row["pod_name"], namespace=row["namespace"])
            except ApiError as exc:
                if exc.status.code != 404:
                    log.warning("stopping pod %s: %s", row["pod_name"], exc.status.message)
                    continue
            except httpx2.HTTPError as exc:
                log.warning("stopping pod %s: %s", row["pod_name"], exc)
                continue
            await self.store.execute(q.KILLED, (row["run_id"], row["number"]))

    # -- TaskRun status, Events, finalizer ---------------------------------------------------

    async def push_statuses(self) -> None:
        limit = self.settings.attempts_in_status
        for run in await self.store.fetch(q.UNPUSHED_RUNS, (_BATCH,)):
            if run["deleted_at"] is not None:
                await self.store.execute(q.MARK_PUSHED, (run["version"], run["id"], run["version"]))
                continue
            attempts = await self.store.fetch(q.RUN_ATTEMPTS, (run["id"], limit))
            status = taskrun_status(run, attempts, output_limit=self.settings.output_limit_bytes)
            try:
                await self.client.patch(
                    TaskRunResource.Status,
                    run["name"],
                    {"status": status},
                    namespace=run["namespace"],
                    patch_type=PatchType.MERGE,
                )
            except ApiError as exc:
                if exc.status.code == 404:
                    await self._orphaned(run)
                else:
                    log.warning(
                        "status of %s/%s: %s", run["namespace"], run["name"], exc.status.message
                    )
                continue
            except httpx2.HTTPError as exc:
                log.warning("status of %s/%s: %s", run["namespace"], run["name"], exc)
                continue
            await self.store.execute(q.MARK_PUSHED, (run["version"], run["id"], run["version"]))

    async def _orphaned(self, run: dict[str, Any]) -> None:
        """The TaskRun is gone (deleted while we were not looking): close its record."""
        await self.store.close(
            str(run["id"]), reason="Deleted", message="the TaskRun no longer exists", deleted=True
        )

    async def post_events(self) -> None:
        rows = await self.store.fetch(q.UNPOSTED_EVENTS, (_BATCH,))
        posted = []
        for row in rows:
            event = Event(
                metadata=ObjectMeta(
                    name=f"{row['name'][:200]}.{row['id']:x}", namespace=row["namespace"]
                ),
                involvedObject=ObjectReference(
                    apiVersion=API_VERSION,
                    kind="TaskRun",
                    name=row["name"],
                    namespace=row["namespace"],
                    uid=str(row["run_id"]),
                ),
                type=row["type"],
                reason=row["reason"],
                message=row["message"][:1024],
                firstTimestamp=row["at"],
                lastTimestamp=row["at"],
                count=1,
                source=EventSource(component="drover-operator"),
                reportingComponent="drover.dev/operator",
                reportingInstance="drover-operator",
            )
            try:
                await self.client.create(event)
            except ApiError as exc:
                if exc.status.code not in (404, 409, 403):  # namespace gone, or a duplicate
                    log.warning("posting event: %s", exc.status.message)
                    continue
            except httpx2.HTTPError:
                continue
            posted.append(row["id"])
        if posted:
            await self.store.execute(q.MARK_POSTED, (posted,))

    async def ensure_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers or meta.get("deletionTimestamp"):
            return
        await self._set_finalizers(meta, [*finalizers, FINALIZER])

    async def remove_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            await self._set_finalizers(meta, [f for f in finalizers if f != FINALIZER])

    async def _set_finalizers(self, meta: dict[str, Any], finalizers: list[str]) -> None:
        # resourceVersion makes this a compare-and-swap: another writer's finalizer is kept.
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.client.patch(
                TaskRunResource,
                meta["name"],
                patch,
                namespace=meta["namespace"],
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code not in (404, 409):
                raise

    # -- Task status --------------------------------------------------------------------------

    def forget_task_status(self, namespace: str, name: str) -> None:
        self._task_status_cache.pop((namespace, name), None)

    async def push_task_statuses(self) -> None:
        for counts in await self.store.fetch(q.TASK_COUNTS):
            key = (counts["namespace"], counts["name"])
            status = task_status(counts)
            if self._task_status_cache.get(key) == status:
                continue
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "status": {
                    **status,
                    "conditions": [{**c, "lastTransitionTime": now} for c in status["conditions"]],
                }
            }
            try:
                await self.client.patch(
                    TaskResource.Status, key[1], body, namespace=key[0], patch_type=PatchType.MERGE
                )
            except _NETWORK as exc:
                log.debug("task status %s/%s: %s", *key, exc)
                continue
            self._task_status_cache[key] = status
