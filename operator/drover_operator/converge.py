"""Make Kubernetes match what the store committed: pods created and stopped, statuses and
Events published. Every action is idempotent and retried on the next pass if it fails."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, codecs
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from drover_operator import metrics
from drover_operator.crd import TaskSpec
from drover_operator.events import post_event
from drover_operator.kube import FINALIZER, TaskResource, TaskRunResource
from drover_operator.pods import LABEL_RUN_UID, PodRequest, build_pod, token_secret
from drover_operator.settings import Settings
from drover_operator.status import task_status, taskrun_status
from drover_operator.store import queries as q
from drover_operator.store.runs import Store
from drover_operator.tokens import attempt_token

log = logging.getLogger(__name__)

_BATCH = 200
_NETWORK = (ApiError, httpx2.HTTPError)


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    """Log record extras naming the run and attempt (JSON logs show them)."""
    return {"run_id": str(row["run_id"]), "attempt": row["number"]}


class Converger:
    def __init__(self, settings: Settings, store: Store, client: AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        # What each Task's status was last set to, and since when its Ready condition has
        # had its current status (so lastTransitionTime moves only when that changes).
        self._task_status_cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._ready_since: dict[tuple[str, str], str] = {}

    # -- pods -------------------------------------------------------------------------------

    async def create_pods(self) -> None:
        for row in await self.store.fetch(q.PODS_TO_CREATE, (_BATCH,)):
            task = TaskSpec.model_validate(row["task_spec"])
            request = PodRequest(
                namespace=row["namespace"],
                run_name=row["name"],
                run_uid=str(row["run_id"]),
                task_name=row["task"],
                attempt=row["number"],
                max_attempts=task.retry.max_attempts,
                task=task,
                api_url=self.settings.pod_api_url,
                otlp_endpoint=self.settings.runner_otlp_endpoint,
                log_format=self.settings.log_format if self.settings.log_format == "json" else "",
            )
            try:
                if task.entrypoint:
                    await self._write_token_secret(request)
                await self.client.create(codecs.from_dict(build_pod(request)))
            except ApiError as exc:
                if exc.status.code != 409 or not await self._is_ours(row):
                    log.warning(
                        "creating pod %s/%s: %s",
                        row["namespace"],
                        row["pod_name"],
                        exc.status.message,
                        extra=_ids(row),
                    )
                    continue
            except httpx2.HTTPError as exc:
                log.warning("creating pod %s: %s", row["pod_name"], exc, extra=_ids(row))
                continue
            await self.store.pod_created(str(row["run_id"]), row["number"])

    async def _write_token_secret(self, request: PodRequest) -> None:
        """Create or overwrite the attempt's token Secret (tokens are derived: idempotent)."""
        assert self.store.signing_key is not None
        token = attempt_token(self.store.signing_key, request.run_uid, request.attempt)
        secret = codecs.from_dict(token_secret(request, token))
        await self.client.apply(secret, force=True)

    async def _is_ours(self, row: dict[str, Any]) -> bool:
        """Whether the attempt's pod exists and belongs to its run. Pod names repeat when a
        TaskRun is deleted and created again: a same-named pod of the other run is never
        adopted (after AlreadyExists) nor stopped."""
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
                if not await self._is_ours(row):  # gone already, or another run's
                    await self.store.execute(q.KILLED, (row["run_id"], row["number"]))
                    continue
                await self.client.delete(
                    Pod, row["pod_name"], namespace=row["namespace"], grace_period=row["kill_grace"]
                )
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
        posted = []
        for row in await self.store.fetch(q.UNPOSTED_EVENTS, (_BATCH,)):
            if await post_event(
                self.client,
                kind="TaskRun",
                name=row["name"],
                namespace=row["namespace"],
                uid=str(row["run_id"]),
                # The run's UID in the name: ids restart with a new database, UIDs never repeat.
                event_name=f"{row['name'][:200]}.{str(row['run_id'])[:8]}{row['id']:x}",
                type=row["type"],
                reason=row["reason"],
                message=row["message"],
                at=row["at"],
            ):
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
        rows = await self.store.fetch(q.TASK_COUNTS)
        metrics.set_task_counts(rows)
        for counts in rows:
            key = (counts["namespace"], counts["name"])
            status = task_status(counts)
            previous = self._task_status_cache.get(key)
            if previous == status:
                continue
            ready = status["conditions"][0]
            unchanged = (
                previous is not None and previous["conditions"][0]["status"] == ready["status"]
            )
            if not unchanged:
                self._ready_since[key] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            since = self._ready_since.get(key) or dt.datetime.now(dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            body = {"status": {**status, "conditions": [{**ready, "lastTransitionTime": since}]}}
            try:
                await self.client.patch(
                    TaskResource.Status, key[1], body, namespace=key[0], patch_type=PatchType.MERGE
                )
            except _NETWORK as exc:
                log.debug("task status %s/%s: %s", *key, exc)
                continue
            self._task_status_cache[key] = status
