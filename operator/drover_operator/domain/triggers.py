"""Triggered runs (pure): the TaskRun a trigger request becomes, and what is wrong with a
request before anything is created."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from drover.protocol.names import GROUP
from drover.protocol.runs import TriggerRequest, tags_as_labels
from drover_operator.crd import TaskRunSpec, TaskSpec
from drover_operator.domain.validation import payload_problem

#: Annotation carrying a triggered run's initial metadata (JSON).
ANNOTATION_METADATA = f"{GROUP}/run-metadata"
#: Label on a replay: the name of the run it replays.
LABEL_REPLAY_OF = f"{GROUP}/replay-of"
#: Label on runs started by a Task's webhook.
LABEL_WEBHOOK = f"{GROUP}/webhook"


@dataclass(frozen=True)
class Problem:
    """Why a request is refused, naming the field."""

    status: int
    type: str
    message: str


def taskrun_spec(task: str, request: TriggerRequest, payload: Any = None) -> dict[str, Any]:
    """The TaskRun's `spec` for a trigger request (`payload` overrides the request's)."""
    spec: dict[str, Any] = {"taskRef": {"name": task}}
    values = {
        "payload": request.payload if payload is None else payload,
        "concurrencyKey": request.concurrency_key,
        "priority": request.priority,
        "delay": request.delay,
        "ttl": request.ttl,
        "tags": tags_as_labels(request.tags),
    }
    spec.update({k: v for k, v in values.items() if v is not None})
    return spec


def check(task: TaskSpec, spec: dict[str, Any], where: str = "") -> Problem | None:
    """What the API server and the operator would refuse about this TaskRun, said now."""
    try:
        TaskRunSpec.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "spec"
        return Problem(422, "invalid-body", f"{where}{field}: {error['msg']}")
    problem = payload_problem(task, spec.get("payload"))
    if problem is not None:
        return Problem(422, "invalid-payload", f"{where}{problem}")
    return None


def metadata_annotation(request: TriggerRequest) -> dict[str, str]:
    if not request.metadata:
        return {}
    return {ANNOTATION_METADATA: json.dumps(request.metadata, separators=(",", ":"))}


def keyed_run_name(task: str) -> str:
    """The name of a run bound to an idempotency key: decided before the TaskRun is
    created, so retries of a creation that may have happened find it by name."""
    return f"{task[:52]}-{secrets.token_hex(5)}"
