"""Starting runs from applications: trigger, batch, replay, cancel.

Every run is still a TaskRun. A request is checked completely first (the Task exists and is
ready, the payload fits its schema, every option is valid), so a refused request creates
nothing. With an idempotency key the store binds the key to a run name in one transaction
(serialized per key across replicas) before the TaskRun is created under that name; any
request that finds the key bound answers with that run instead, creating it if a crash
stopped the first request in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from drover.protocol.durations import parse_duration
from drover.protocol.phases import FINISHED_PHASES, Phase
from drover.protocol.runs import RunView, TriggerRequest
from drover_operator.converge.taskruns import Result, TaskRunWriter
from drover_operator.crd import TaskSpec
from drover_operator.domain.pods import label_value
from drover_operator.domain.records import RunRecord
from drover_operator.domain.triggers import (
    LABEL_REPLAY_OF,
    Problem,
    check,
    keyed_run_name,
    metadata_annotation,
    taskrun_spec,
)
from drover_operator.errors import RequestError
from drover_operator.store import Store

log = logging.getLogger(__name__)

#: TaskRuns created at once for a batch.
_BATCH_CONCURRENCY = 16


class TriggerError(RequestError):
    """A refused trigger: `status`, a problem `type`, and what is wrong."""

    @classmethod
    def of(cls, problem: Problem) -> TriggerError:
        return cls(problem.status, problem.type, problem.message)


@dataclass(frozen=True)
class Started:
    """A run a request started, or found: `cached` when an idempotency key matched."""

    name: str
    id: str
    phase: str
    cached: bool


class Triggers:
    """Starts, replays and cancels runs on behalf of API callers and webhooks."""

    def __init__(self, store: Store, taskruns: TaskRunWriter) -> None:
        self.store = store
        self.taskruns = taskruns

    async def task(self, namespace: str, name: str) -> TaskSpec:
        """The Task runs are started for: 404 if there is none, 409 if it is not ready."""
        record = await self.store.tasks.get(namespace, name)
        raw = record.spec if record is not None else await self.taskruns.get_task(namespace, name)
        if raw is None:
            raise TriggerError(
                404, "not-found", f'Task "{name}" not found in namespace "{namespace}"'
            )
        if record is not None and record.invalid:
            raise TriggerError(
                409, "task-not-ready", f'Task "{name}" is not ready: {record.invalid}'
            )
        try:
            return TaskSpec.model_validate(raw)
        except ValidationError as exc:
            raise TriggerError(
                409, "task-not-ready", f'Task "{name}" is not valid: {exc}'
            ) from None

    async def trigger(
        self,
        namespace: str,
        task: str,
        request: TriggerRequest,
        *,
        labels: dict[str, str] | None = None,
        owner: tuple[str, str] | None = None,
    ) -> Started:
        """Start a run (`owner`: the (name, uid) of the TaskRun it is a child of)."""
        spec = await self.task(namespace, task)
        run_spec = taskrun_spec(task, request)
        problem = check(spec, run_spec)
        if problem is not None:
            raise TriggerError.of(problem)
        return await self._start(namespace, task, request, run_spec, labels or {}, owner)

    async def batch(
        self,
        namespace: str,
        task: str,
        requests: Sequence[TriggerRequest],
        *,
        labels: dict[str, str] | None = None,
        owner: tuple[str, str] | None = None,
    ) -> list[Started]:
        """Every item checked first, then started in order (some at a time)."""
        spec = await self.task(namespace, task)
        run_specs = [taskrun_spec(task, request) for request in requests]
        for index, run_spec in enumerate(run_specs):
            problem = check(spec, run_spec, where=f"items[{index}].")
            if problem is not None:
                raise TriggerError.of(problem)
        gate = asyncio.Semaphore(_BATCH_CONCURRENCY)

        async def start(request: TriggerRequest, run_spec: dict[str, Any]) -> Started:
            async with gate:
                return await self._start(namespace, task, request, run_spec, labels or {}, owner)

        return list(
            await asyncio.gather(*(start(r, s) for r, s in zip(requests, run_specs, strict=True)))
        )

    async def _start(
        self,
        namespace: str,
        task: str,
        request: TriggerRequest,
        run_spec: dict[str, Any],
        labels: dict[str, str],
        owner: tuple[str, str] | None = None,
    ) -> Started:
        annotations = metadata_annotation(request)
        key = request.idempotency_key
        if key is None:
            result, detail, name = await self.taskruns.create_run(
                namespace,
                run_spec,
                generate_name=f"{task[:57]}-",
                labels=labels,
                annotations=annotations,
                owner=owner,
            )
            self._raise_unless_done(result, detail)
            return Started(name, detail, Phase.QUEUED, cached=False)
        ttl = parse_duration(request.idempotency_key_ttl)
        binding = await self.store.triggers.bind(
            namespace, task, key, ttl, lambda: keyed_run_name(task)
        )
        if not binding.fresh and binding.run_id is not None:
            return Started(
                binding.run_name, binding.run_id, binding.phase or Phase.QUEUED, cached=True
            )
        # Bound now, or bound by a request whose creation has not (yet) happened.
        result, detail, _ = await self.taskruns.create_run(
            namespace,
            run_spec,
            name=binding.run_name,
            labels=labels,
            annotations=annotations,
            owner=owner,
        )
        # Whoever bound the key started the run (201), even when a duplicate request, finding
        # the key bound and the TaskRun not yet there, created the object first.
        cached = not binding.fresh
        if result == Result.GONE:  # created by another request for the same key
            uid = await self.taskruns.uid_of(namespace, binding.run_name)
            if uid is None:
                raise TriggerError(503, "unavailable", "the run is being created; retry")
            detail = uid
        else:
            self._raise_unless_done(result, detail)
        await self.store.triggers.created(namespace, task, key, binding.run_name, detail)
        return Started(binding.run_name, detail, Phase.QUEUED, cached=cached)

    @staticmethod
    def _raise_unless_done(result: Result, detail: str) -> None:
        if result == Result.REFUSED:
            raise TriggerError(422, "invalid-body", f"Kubernetes refused the TaskRun: {detail}")
        if result != Result.DONE:
            raise TriggerError(503, "unavailable", f"could not create the TaskRun: {detail}")

    # -- existing runs ---------------------------------------------------------------------

    async def run(self, namespace: str, name: str) -> RunRecord:
        record = await self.store.runs.by_name(namespace, name)
        if record is None:
            raise TriggerError(
                404, "not-found", f'run "{name}" not found in namespace "{namespace}"'
            )
        return record

    async def unrecorded(self, namespace: str, name: str) -> RunView | None:
        """A run whose TaskRun exists but which the operator has not recorded yet (it was
        created a moment ago): as much of it as its TaskRun tells."""
        body = await self.taskruns.get_run(namespace, name)
        if body is None:
            return None
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        status = body.get("status") or {}
        return RunView(
            name=name,
            id=meta.get("uid", ""),
            namespace=namespace,
            task=(spec.get("taskRef") or {}).get("name", ""),
            phase=status.get("phase") or Phase.QUEUED,
            payload=spec.get("payload"),
        )

    async def replay(self, namespace: str, name: str, payload: Any = None) -> Started:
        """A new run of the same Task with the same options (and `payload`, if given)."""
        source = await self.run(namespace, name)
        spec = await self.task(namespace, source.task)
        run_spec: dict[str, Any] = {"taskRef": {"name": source.task}}
        values = {
            "payload": source.payload if payload is None else payload,
            "concurrencyKey": source.concurrency_key,
            "priority": source.priority or None,
            "tags": source.tags or None,
        }
        run_spec.update({k: v for k, v in values.items() if v is not None})
        problem = check(spec, run_spec)
        if problem is not None:
            raise TriggerError.of(problem)
        result, detail, new_name = await self.taskruns.create_run(
            namespace,
            run_spec,
            generate_name=f"{source.task[:57]}-",
            labels={LABEL_REPLAY_OF: label_value(name)},
        )
        self._raise_unless_done(result, detail)
        return Started(new_name, detail, Phase.QUEUED, cached=False)

    async def cancel(self, namespace: str, name: str) -> RunRecord:
        """Ask the run to stop (its TaskRun's `spec.cancel`); the operator cancels it."""
        record = await self.run(namespace, name)
        if record.phase in FINISHED_PHASES:
            if record.phase == Phase.CANCELED:
                return record
            raise TriggerError(
                409, "already-finished", f'run "{name}" already finished: {record.phase}'
            )
        result = await self.taskruns.cancel(namespace, name, record.id)
        if result == Result.GONE:
            raise TriggerError(404, "not-found", f'the TaskRun "{name}" no longer exists')
        if result != Result.DONE:
            raise TriggerError(503, "unavailable", "could not patch the TaskRun; retry")
        return record
