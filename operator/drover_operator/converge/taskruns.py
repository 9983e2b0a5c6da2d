"""TaskRuns and pods the schedules and the history rules decided about: created for a tick,
canceled (concurrencyPolicy Replace), deleted beyond a Task's history, pods removed after
their retention. Each action acts on one object by its UID, so a TaskRun of the same name
created since is never touched."""

from __future__ import annotations

import datetime as dt
import logging
import re
from enum import Enum
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from drover.protocol.names import (
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    LABEL_RUN_UID,
    LABEL_SCHEDULE,
)
from drover.protocol.timestamps import rfc3339
from drover_operator.crd.common import DNS_LABEL, DNS_SUBDOMAIN
from drover_operator.domain.pods import label_value
from drover_operator.domain.records import RunRef, ScheduledRun
from drover_operator.kube import NETWORK_ERRORS, TaskResource, TaskRunResource

log = logging.getLogger(__name__)

# A Kubernetes object name (DNS-1123 subdomain) and namespace (label). A name from a URL that
# is neither cannot exist, and some (control characters) are not even a valid request URL.
_SUBDOMAIN = re.compile(DNS_SUBDOMAIN)
_LABEL = re.compile(DNS_LABEL)


def _could_exist(namespace: str, name: str) -> bool:
    return (
        len(name) <= 253
        and _SUBDOMAIN.fullmatch(name) is not None
        and len(namespace) <= 63
        and _LABEL.fullmatch(namespace) is not None
    )


class Result(Enum):
    """How an action on one object ended."""

    DONE = "done"
    GONE = "gone"  # the object (with that UID) no longer exists
    REFUSED = "refused"  # the API refused it for good
    RETRY = "retry"  # try again next pass


class TaskRunWriter:
    """Creates, cancels and deletes TaskRuns, and removes finished runs' pods."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def create_scheduled(self, run: ScheduledRun) -> tuple[Result, str]:
        """Create the TaskRun for a scheduled tick: (DONE, its UID), (REFUSED, why), or
        (RETRY, ""). AlreadyExists is the run for the same tick (created before a crash,
        or by another replica): adopted."""
        scheduled = rfc3339(run.scheduled_at)
        spec: dict[str, Any] = {"taskRef": {"name": run.task}}
        if run.payload is not None:
            spec["payload"] = run.payload
        body = TaskRunResource(
            metadata=ObjectMeta(
                name=run.name,
                namespace=run.namespace,
                labels={LABEL_SCHEDULE: label_value(run.task)},
                annotations={ANNOTATION_SCHEDULED_TIME: scheduled},
                ownerReferences=[
                    OwnerReference(
                        apiVersion=API_VERSION,
                        kind="Task",
                        name=run.task,
                        uid=run.task_uid,
                        controller=True,
                    )
                ],
            ),
            spec=spec,
        )
        try:
            created = await self.client.create(body)
        except ApiError as exc:
            if exc.status.code in (400, 422):
                return Result.REFUSED, f"refused: {exc.status.message}"
            if exc.status.code != 409:
                log.warning("creating %s/%s: %s", run.namespace, run.name, exc.status.message)
                return Result.RETRY, ""
            return await self._adopt(run.namespace, run.name, scheduled)
        except NETWORK_ERRORS as exc:
            log.warning("creating %s/%s: %s", run.namespace, run.name, exc)
            return Result.RETRY, ""
        uid = created.metadata.uid if created.metadata else None
        return (Result.DONE, uid) if uid else (Result.RETRY, "")

    async def _adopt(self, namespace: str, name: str, scheduled: str) -> tuple[Result, str]:
        try:
            existing = await self.client.get(TaskRunResource, name, namespace=namespace)
        except (ApiError, *NETWORK_ERRORS):
            return Result.RETRY, ""
        meta = existing.metadata
        annotations = (meta.annotations if meta else None) or {}
        if meta is None or not meta.uid or annotations.get(ANNOTATION_SCHEDULED_TIME) != scheduled:
            return Result.REFUSED, "another TaskRun has that name"
        return Result.DONE, meta.uid

    async def cancel(self, namespace: str, name: str, uid: str) -> Result:
        """Set `spec.cancel` on the TaskRun with this UID."""
        # The UID makes this a precondition: a newer TaskRun of the same name is untouched.
        patch = {"metadata": {"uid": uid}, "spec": {"cancel": True}}
        try:
            await self.client.patch(
                TaskRunResource, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as exc:
            if exc.status.code in (404, 409, 422):
                return Result.GONE
            log.warning("canceling %s/%s: %s", namespace, name, exc.status.message)
            return Result.RETRY
        except NETWORK_ERRORS as exc:
            log.warning("canceling %s/%s: %s", namespace, name, exc)
            return Result.RETRY
        return Result.DONE

    async def create_run(
        self,
        namespace: str,
        spec: dict[str, Any],
        *,
        name: str | None = None,
        generate_name: str | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        owner: tuple[str, str] | None = None,
    ) -> tuple[Result, str, str]:
        """Create a TaskRun (named `name`, or by the API server from `generate_name`; owned by
        the TaskRun `owner` = (name, uid), so deleting that deletes this):
        (DONE, uid, name); (GONE, "", "") when `name` exists already; (REFUSED, message, "")
        when the API server refuses it; (RETRY, message, "") when it could not answer."""
        body = TaskRunResource(
            metadata=ObjectMeta(
                name=name,
                generateName=None if name else generate_name,
                namespace=namespace,
                labels=labels or None,
                annotations=annotations or None,
                ownerReferences=[_owner_reference(*owner)] if owner else None,
            ),
            spec=spec,
        )
        try:
            created = await self.client.create(body)
        except ApiError as exc:
            if exc.status.code == 409 and name:
                return Result.GONE, "", ""
            if exc.status.code in (400, 403, 422):
                return Result.REFUSED, exc.status.message or str(exc), ""
            return Result.RETRY, exc.status.message or str(exc), ""
        except NETWORK_ERRORS as exc:
            return Result.RETRY, str(exc), ""
        meta = created.metadata
        assert meta is not None and meta.uid and meta.name
        return Result.DONE, meta.uid, meta.name

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A TaskRun as the API server has it; None if there is none."""
        if not _could_exist(namespace, name):
            return None
        try:
            found = await self.client.get(TaskRunResource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        body: dict[str, Any] = found.to_dict()  # type: ignore[no-untyped-call]
        return body

    async def uid_of(self, namespace: str, name: str) -> str | None:
        """The UID of the TaskRun `name`; None if there is none. Raises when the API server
        does not answer."""
        if not _could_exist(namespace, name):
            return None
        try:
            found = await self.client.get(TaskRunResource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return found.metadata.uid if found.metadata else None

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Task's spec as the API server has it (before the operator has seen it)."""
        try:
            found = await self.client.get(TaskResource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        spec: dict[str, Any] = found.spec or {}
        return spec

    async def uids(self, namespaces: list[str] | None) -> set[str] | None:
        """The UIDs of every TaskRun in `namespaces` (None: all), listed in pages; None: the
        API server did not answer or refused."""
        found: set[str] = set()
        try:
            for namespace in namespaces or ["*"]:
                async for run in self.client.list(
                    TaskRunResource, namespace=namespace, chunk_size=500
                ):
                    if run.metadata is not None and run.metadata.uid:
                        found.add(run.metadata.uid)
        except (ApiError, *NETWORK_ERRORS) as exc:
            log.warning("listing TaskRuns: %s", exc)
            return None
        return found

    async def exists(self, namespace: str, name: str, uid: str) -> bool | None:
        """Whether the TaskRun called `name` with this UID exists; None: the API server did
        not answer."""
        try:
            found = await self.client.get(TaskRunResource, name, namespace=namespace)
        except ApiError as exc:
            return False if exc.status.code == 404 else None
        except NETWORK_ERRORS:
            return None
        return found.metadata is not None and found.metadata.uid == uid

    async def delete(self, run: RunRef) -> Result:
        """Delete the run's TaskRun (only the one with the run's UID)."""
        exists = await self.exists(run.namespace, run.name, run.id)
        if exists is None:
            return Result.RETRY
        if not exists:
            return Result.GONE
        try:
            await self.client.delete(TaskRunResource, run.name, namespace=run.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return Result.GONE
            log.warning("deleting TaskRun %s/%s: %s", run.namespace, run.name, exc.status.message)
            return Result.RETRY
        except NETWORK_ERRORS as exc:
            log.warning("deleting TaskRun %s/%s: %s", run.namespace, run.name, exc)
            return Result.RETRY
        return Result.DONE

    async def remove_pods(self, run: RunRef) -> Result:
        """Delete every pod of the run (by its UID label: pod names repeat when a TaskRun
        name is reused)."""
        try:
            pods = [
                pod
                async for pod in self.client.list(
                    Pod, namespace=run.namespace, labels={LABEL_RUN_UID: run.id}
                )
            ]
            for pod in pods:
                if pod.metadata is not None and pod.metadata.name:
                    try:
                        await self.client.delete(Pod, pod.metadata.name, namespace=run.namespace)
                    except ApiError as exc:
                        if exc.status.code != 404:
                            raise
        except (ApiError, *NETWORK_ERRORS) as exc:
            log.warning("removing pods of run %s: %s", run.id, exc)
            return Result.RETRY
        return Result.DONE

    async def task_created(self, namespace: str, name: str) -> dt.datetime | None:
        """When the Task was created (a new schedule's cursor starts there)."""
        try:
            task = await self.client.get(TaskResource, name, namespace=namespace)
        except (ApiError, *NETWORK_ERRORS) as exc:
            log.debug("reading Task %s/%s: %s", namespace, name, exc)
            return None
        return task.metadata.creationTimestamp if task.metadata else None


def _owner_reference(name: str, uid: str) -> OwnerReference:
    return OwnerReference(
        apiVersion=API_VERSION,
        kind="TaskRun",
        name=name,
        uid=uid,
        blockOwnerDeletion=False,
    )
