"""Bodies of the trigger and run-history API (`/v1/namespaces/{ns}/...`), shared by the
operator (server) and `drover.Client`."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

from drover.protocol.durations import DURATION_PATTERN, parse_duration
from drover.protocol.wire import MAX_METADATA_BYTES, Reply, Wire

MAX_IDEMPOTENCY_KEY = 2048
MAX_TAGS = 10
MAX_TAG = 128
MAX_BATCH = 1000
#: A run's payload, as JSON (it is stored in the TaskRun, which etcd keeps under 1.5 MiB).
MAX_PAYLOAD_BYTES = 512 * 1024
#: A batch request's body.
MAX_BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_IDEMPOTENCY_KEY_TTL = "720h"  # 30 days

_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
#: A tag is `key` or `key=value`, both label-style (they become the TaskRun's `spec.tags`).
TAG_PATTERN = rf"^{_LABEL}(=({_LABEL})?)?$"
#: A concurrency key: no whitespace, no control character (Postgres stores no NUL in text).
CONCURRENCY_KEY_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _positive(value: str) -> str:
    if parse_duration(value) <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


def _small_json(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


def _unique(tags: list[str]) -> list[str]:
    keys = [t.split("=", 1)[0] for t in tags]
    if len(set(keys)) != len(keys):
        raise ValueError("tag keys must be unique")
    return tags


_DURATION = StringConstraints(pattern=DURATION_PATTERN, max_length=32)
Duration = Annotated[str, _DURATION, AfterValidator(_duration)]
PositiveDuration = Annotated[str, _DURATION, AfterValidator(_duration), AfterValidator(_positive)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG, pattern=TAG_PATTERN)]


def tags_as_labels(tags: list[str] | None) -> dict[str, str] | None:
    """`["vip", "tenant=42"]` as the TaskRun's `spec.tags`: `{"vip": "", "tenant": "42"}`."""
    if not tags:
        return None
    return {key: value for key, _, value in (t.partition("=") for t in tags)}


def labels_as_tags(labels: dict[str, str] | None) -> list[str]:
    return [k if not v else f"{k}={v}" for k, v in sorted((labels or {}).items())]


class TriggerRequest(Wire):
    """Start a run of a Task. Everything but the payload is optional."""

    payload: Any = None
    """The run's input (any JSON), checked against the Task's `payloadSchema`."""
    idempotency_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)] | None
    ) = Field(default=None, alias="idempotencyKey")
    """Triggers with the same key (for the same Task) start one run; later ones get it back."""
    idempotency_key_ttl: PositiveDuration = Field(
        default=DEFAULT_IDEMPOTENCY_KEY_TTL, alias="idempotencyKeyTTL"
    )
    """How long the key stays bound to its run (unless that run fails)."""
    concurrency_key: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=253, pattern=CONCURRENCY_KEY_PATTERN)
        ]
        | None
    ) = Field(default=None, alias="concurrencyKey")
    priority: Annotated[int, Field(ge=-1000, le=1000)] | None = None
    delay: Duration | None = None
    ttl: PositiveDuration | None = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_unique)] | None = None
    metadata: Annotated[dict[str, Any], AfterValidator(_small_json)] | None = None
    """The run's initial metadata (what `drover.current_run().metadata` starts with)."""


class BatchRequest(Wire):
    """Trigger up to 1,000 runs at once; nothing is created unless every item is valid."""

    items: Annotated[list[TriggerRequest], Field(min_length=1, max_length=MAX_BATCH)]


class ReplayRequest(Wire):
    """Start a new run of the same Task with the same options; `payload` replaces the
    original's when given."""

    payload: Any = None


class Waiting(Reply):
    """Why a run that has not started waits."""

    reason: str
    """`Delayed`, `ConcurrencyLimit`, `PerKeyLimit`, `TaskNotFound`, `TaskNotReady`."""
    message: str
    position: int | None = None
    """Runs of the same Task ahead of this one (0: next), for runs waiting for a slot."""
    eligible_at: datetime | None = Field(default=None, alias="eligibleAt")


class StepRef(Reply):
    """A recorded step (or workflow position) of a run, by position and name."""

    seq: int
    name: str


class RunView(Reply):
    """A run as the API shows it: from Drover's history, so also after its TaskRun is gone."""

    name: str
    id: str
    namespace: str
    task: str
    phase: str
    cached: bool | None = None
    """In a trigger's answer: whether the idempotency key matched an existing run."""
    attempt: int = 0
    created_at: datetime | None = Field(default=None, alias="createdAt")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    finished_at: datetime | None = Field(default=None, alias="finishedAt")
    reason: str | None = None
    message: str | None = None
    waiting: Waiting | None = None
    concurrency_key: str | None = Field(default=None, alias="concurrencyKey")
    priority: int = 0
    tags: list[str] = Field(default_factory=list)
    payload: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent: str | None = None
    """The run that started this one (a child run), by name."""
    children: int = 0
    """How many child runs this run started."""
    steps: list[StepRef] | None = None
    """One run's view (not a list's rows): its recorded steps, in order."""


class RunList(Reply):
    """A page of runs, newest first; pass `continue` back for the next page."""

    items: list[RunView]
    continue_: str | None = Field(default=None, alias="continue")


def tag_filter(value: str) -> tuple[str, str | None]:
    """`key` or `key=value` as a filter: (key, value or None for any value)."""
    if not re.fullmatch(TAG_PATTERN, value):
        raise ValueError(f"tag {value!r} is not `key` or `key=value` (label-style)")
    key, _, rest = value.partition("=")
    return key, rest if "=" in value else None
