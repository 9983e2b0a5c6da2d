"""Pods of attempts: created (with their token Secret) for admitted attempts, stopped for
attempts that ended while their pod runs. Idempotent; what fails is retried next pass.

Token Secrets are only ever created, never patched or read: their names carry a MAC (see
`domain.tokens`), so an existing Secret of that name is the one this operator created before
a crash, and no Secret of anyone else is ever modified or given an owner."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.resources.core_v1 import Pod

from drover.protocol.names import LABEL_RUN_UID
from drover_operator.crd import TaskSpec
from drover_operator.domain.pods import PodRequest, build_pod, token_secret
from drover_operator.domain.records import PodToCreate
from drover_operator.domain.tokens import attempt_token, token_secret_name
from drover_operator.kube import NETWORK_ERRORS, POD_CONCURRENCY
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store

log = logging.getLogger(__name__)


def _ids(run_id: str, number: int) -> dict[str, Any]:
    """Log record extras naming the run and attempt (JSON logs show them)."""
    return {"run_id": run_id, "attempt": number}


class AttemptSpecs:
    """The Task spec each attempt's pod was created with, for the pods this replica created
    lately: the attempt's end then reads it from here, not from Postgres. A miss (another
    replica's pod, a restart, an old attempt) reads the store."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._specs: OrderedDict[tuple[str, int], TaskSpec] = OrderedDict()

    def add(self, attempt: tuple[str, int], spec: TaskSpec) -> None:
        self._specs[attempt] = spec
        while len(self._specs) > self.size:
            self._specs.popitem(last=False)

    def get(self, attempt: tuple[str, int]) -> TaskSpec | None:
        return self._specs.get(attempt)

    def discard(self, attempt: tuple[str, int]) -> None:
        self._specs.pop(attempt, None)


@dataclass(frozen=True)
class CreatedPod:
    namespace: str
    task: str
    number: int
    #: Seconds from the TaskRun's creation, the first time the attempt's pod was created.
    latency: float | None


class PodConverger:
    """Makes attempts' pods exist while they should, and go when they should not."""

    def __init__(
        self,
        settings: OperatorSettings,
        store: Store,
        client: AsyncClient,
        key: bytes | None,
    ) -> None:
        self.writes = asyncio.Semaphore(POD_CONCURRENCY)
        self.specs = AttemptSpecs()
        self.settings = settings
        self.store = store
        self.client = client
        self.signing_key = key
        self._api_ca = settings.api.pod_ca

    async def create(self) -> list[CreatedPod]:
        """Create the pods of admitted attempts that have none yet, several at a time (each
        is independent; a burst of admissions or resumes must not queue behind one another's
        round trips), then mark them created in one statement. AlreadyExists with the same
        run's UID means it was created before a crash: adopted."""
        rows = await self.store.attempts.pods_to_create(self.settings.loop.batch_size)

        async def one(row: PodToCreate) -> PodToCreate | None:
            async with self.writes:
                return row if await self._create(row) else None

        done = [row for row in await asyncio.gather(*(one(row) for row in rows)) if row]
        first = await self.store.attempts.pods_created([(r.run_id, r.number) for r in done])
        return [
            CreatedPod(r.namespace, r.task, r.number, first.get((r.run_id, r.number))) for r in done
        ]

    async def _create(self, row: PodToCreate) -> bool:
        """Create the attempt's pod (and its token Secret); False if that failed (retried
        next pass)."""
        task = TaskSpec.model_validate(row.task_spec)
        self.specs.add((row.run_id, row.number), task)
        secret = self._secret_name(row.run_id, row.number, row.pod_name)
        request = PodRequest(
            namespace=row.namespace,
            run_name=row.name,
            run_uid=row.run_id,
            task_name=row.task,
            attempt=row.try_number,
            execution=row.number,
            pod=row.pod_name,
            max_duration=row.max_duration,
            max_attempts=task.retry.max_attempts,
            task=task,
            api_url=self.settings.api.pod_url,
            otlp_endpoint=self.settings.runner.otlp_endpoint,
            log_format="json" if self.settings.logging.format == "json" else "",
            token_secret=secret if task.entrypoint else "",
            api_ca=self._api_ca if task.entrypoint else "",
        )
        try:
            if task.entrypoint:
                await self._create_token_secret(request)
            await self.client.create(codecs.from_dict(build_pod(request)))
        except ApiError as exc:
            if exc.status.code != 409 or not await self.is_ours(
                row.namespace, row.pod_name, row.run_id
            ):
                log.warning(
                    "creating pod %s/%s: %s",
                    row.namespace,
                    row.pod_name,
                    exc.status.message,
                    extra=_ids(row.run_id, row.number),
                )
                return False
        except NETWORK_ERRORS as exc:
            extra = _ids(row.run_id, row.number)
            log.warning("creating pod %s: %s", row.pod_name, exc, extra=extra)
            return False
        return True

    def _secret_name(self, run_id: str, number: int, pod: str) -> str:
        if self.signing_key is None:
            return ""
        return token_secret_name(self.signing_key, run_id, number, pod)

    async def _create_token_secret(self, request: PodRequest) -> None:
        """Create the attempt's token Secret. AlreadyExists means it was created before (a
        crash, or another replica): nobody else can know its name."""
        assert self.signing_key is not None
        token = attempt_token(
            self.signing_key, request.run_uid, request.execution or request.attempt
        )
        try:
            await self.client.create(codecs.from_dict(token_secret(request, token)))
        except ApiError as exc:
            if exc.status.code != 409:
                raise

    async def is_ours(self, namespace: str, name: str, run_id: str) -> bool:
        """Whether the pod exists and belongs to the run. Pod names repeat when a TaskRun is
        deleted and created again: a same-named pod of the other run is never adopted
        (after AlreadyExists) nor stopped."""
        pod = await self.get(namespace, name)
        labels = (pod or {}).get("metadata", {}).get("labels") or {}
        return bool(labels.get(LABEL_RUN_UID) == run_id)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = await self.client.get(Pod, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        result: dict[str, Any] = pod.to_dict()
        return result

    async def stop(self) -> None:
        """Delete the pods of attempts that ended while their pod ran (cancel, timeout,
        stall), with the grace the decision asked for."""
        for row in await self.store.attempts.pods_to_stop(self.settings.loop.batch_size):
            try:
                if await self.is_ours(row.namespace, row.pod_name, row.run_id):
                    await self.client.delete(
                        Pod, row.pod_name, namespace=row.namespace, grace_period=row.kill_grace
                    )
            except ApiError as exc:
                if exc.status.code != 404:
                    log.warning("stopping pod %s: %s", row.pod_name, exc.status.message)
                    continue
            except NETWORK_ERRORS as exc:
                log.warning("stopping pod %s: %s", row.pod_name, exc)
                continue
            await self.store.attempts.pod_stopped(row.run_id, row.number)
