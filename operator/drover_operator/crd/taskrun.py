"""The TaskRun resource: one request to run a Task with a payload, and its outcome."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from drover.protocol.runs import CONCURRENCY_KEY_PATTERN
from drover_operator.crd.base import CEL, CRDModel, JSONObject, JSONValue, immutable, rules
from drover_operator.crd.common import ConditionList, ObjectName
from drover_operator.crd.durations import Duration, PositiveDuration

#: Label-compatible tag keys and values, so tags can be copied to labels and selected on.
TAG_KEY_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
TAG_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
MAX_TAGS = 32
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000

#: The phases as the CRD's schema lists them: `drover.protocol.phases.Phase` is where each is
#: defined and documented (a test keeps the two the same).
Phase = Literal[
    "Queued",
    "Starting",
    "Running",
    "Waiting",
    "Retrying",
    "Succeeded",
    "Failed",
    "Canceled",
    "TimedOut",
    "Expired",
]


class TaskRef(CRDModel):
    """Reference to a Task in the same namespace."""

    name: Annotated[ObjectName, immutable()]
    """Name of the Task to run. Whether it exists is checked by the operator."""


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    for key in tags:
        if len(key) > 63 or not re.fullmatch(TAG_KEY_PATTERN, key):
            raise ValueError(f"tag key {key!r} must be a label-style name of at most 63 chars")
    return tags


Tags = Annotated[
    dict[
        str,
        Annotated[str, StringConstraints(max_length=63, pattern=TAG_VALUE_PATTERN)],
    ],
    Field(max_length=MAX_TAGS),
    AfterValidator(_check_tags),
    CEL(
        f"self.all(k, size(k) <= 63 && k.matches('{TAG_KEY_PATTERN}'))",
        "keys must be label-style names of at most 63 characters (letters, digits, '-', '_', "
        "'.'; starting and ending with a letter or digit)",
    ),
]

_IMMUTABLE_WHEN_OPTIONAL = ("concurrencyKey", "delay", "notBefore", "ttl", "tags")


class TaskRunSpec(CRDModel):
    """Desired state of a TaskRun. Immutable after creation, except `cancel`."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                "!(has(self.delay) && has(self.notBefore))",
                "delay and notBefore are mutually exclusive",
                field_path=".notBefore",
            ),
            # Per-field `self == oldSelf` rules only run when the field exists before and
            # after, so adding or removing an optional field is caught here.
            *(
                CEL(
                    f"has(self.{name}) == has(oldSelf.{name})",
                    f"{name} is immutable (it cannot be added or removed after creation)",
                    field_path=f".{name}",
                    reason="FieldValueForbidden",
                )
                for name in _IMMUTABLE_WHEN_OPTIONAL
            ),
        )
    )

    task_ref: TaskRef
    """The Task to run."""
    payload: JSONValue = None
    """Input of the run (any JSON), validated against the Task's `payloadSchema` by the
    operator. SDK tasks receive it as their argument. Not re-read after admission."""
    concurrency_key: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=253, pattern=CONCURRENCY_KEY_PATTERN),
            immutable(),
        ]
        | None
    ) = None
    """Groups runs for the Task's `concurrency.perKeyLimit`, e.g. `tenant-42`."""
    priority: Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX), immutable()] = 0
    """Higher runs are admitted first when slots are scarce; equal priorities run in
    creation order."""
    delay: Annotated[Duration, immutable()] | None = None
    """Do not start before this long after creation. Exclusive with `notBefore`."""
    not_before: Annotated[datetime, immutable()] | None = None
    """Do not start before this time (RFC 3339). Exclusive with `delay`."""
    ttl: Annotated[PositiveDuration, immutable()] | None = None
    """Expire (phase `Expired`) if no attempt has started this long after the run became
    eligible (after `delay`/`notBefore`)."""
    tags: Annotated[Tags, immutable()] | None = None
    """Label-style key/value pairs for finding runs (dashboards, API filters)."""
    cancel: Annotated[
        bool,
        CEL(
            "self || !oldSelf",
            "cannot be set back to false once true",
            reason="FieldValueForbidden",
        ),
    ] = False
    """Set to true to cancel: a queued run never starts, a running attempt's pod is stopped;
    the phase becomes `Canceled`. Cannot be undone."""

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskRunSpec:
        if self.delay is not None and self.not_before is not None:
            raise ValueError("delay and notBefore are mutually exclusive")
        return self


class Attempt(CRDModel):
    """One pod of a run: an attempt, or an attempt resumed after a durable wait."""

    number: Annotated[int, Field(ge=1)]
    """Attempt number, starting at 1 (a resumed attempt keeps its number)."""
    execution: Annotated[int, Field(ge=1)] | None = None
    """The pod's number among all of the run's pods (attempts and their resumptions)."""
    pod_name: Annotated[str, StringConstraints(max_length=253)] | None = None
    """The attempt's pod."""
    start_time: datetime | None = None
    """When the attempt's container started."""
    finish_time: datetime | None = None
    """When the attempt ended."""
    exit_code: int | None = None
    """Exit code of the task container, if it terminated."""
    reason: Annotated[str, StringConstraints(max_length=256)] | None = None
    """Why the attempt ended, e.g. `Completed`, `Error`, `Stalled`, `OOMKilled`,
    `TimedOut`, `Canceled`."""
    message: Annotated[str, StringConstraints(max_length=4096)] | None = None
    """Details (truncated)."""


class RunError(CRDModel):
    """Why the run failed (the last attempt's error)."""

    type: Annotated[str, StringConstraints(max_length=256)]
    """Error class, e.g. `ValueError`, `ExitCode`, `Stalled`, `InvalidPayload`, `TaskNotFound`."""
    message: Annotated[str, StringConstraints(max_length=32768)]
    """Error message (truncated)."""
    retryable: bool
    """Whether the error allowed another attempt."""


class WaitingFor(CRDModel):
    """What a `Waiting` run waits on; it holds no pod and no concurrency slot meanwhile."""

    kind: Literal["Duration", "Token", "Runs"]
    """`Duration`: a time; `Token`: a waitpoint token; `Runs`: child runs to finish."""
    until: datetime | None = None
    """When a `Duration` wait is over."""
    token: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The token a `Token` wait is for."""
    runs: (
        Annotated[list[Annotated[str, StringConstraints(max_length=253)]], Field(max_length=1000)]
        | None
    ) = None
    """The runs a `Runs` wait is for (TaskRun names)."""


class StepProgress(CRDModel):
    """Checkpointed `drover.step` progress of an SDK task."""

    completed: Annotated[int, Field(ge=0)] = 0
    """Number of steps whose results are checkpointed."""


class TaskRunStatus(CRDModel):
    """Observed state of a TaskRun, written by the operator."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` this status reflects."""
    phase: Phase | None = None
    """Where the run is in its lifecycle."""
    run_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Durable id of the run in Drover's store (stays valid after the TaskRun is deleted)."""
    attempt: Annotated[int, Field(ge=0)] | None = None
    """Number of the current or last attempt (0 before the first starts)."""
    attempts: Annotated[list[Attempt], Field(max_length=100)] | None = None
    """Attempt history, oldest first."""
    conditions: ConditionList | None = None
    """`Succeeded`: Unknown while in progress, True on success, False on failure, with
    reason (e.g. `Queued`, `Running`, `Failed`, `Canceled`, `InvalidPayload`) and message."""
    start_time: datetime | None = None
    """When the first attempt started."""
    completion_time: datetime | None = None
    """When the run finished."""
    next_attempt_time: datetime | None = None
    """When the next attempt may start (phase `Retrying`, or a delayed `Queued` run)."""
    output: JSONValue = None
    """Return value of an SDK task (JSON, truncated; the full value is in the store)."""
    output_truncated: bool | None = None
    """True if `output` was too large and is only available through Drover's API."""
    metadata: JSONObject | None = None
    """Metadata the task set through the SDK (`drover.current_run().set_metadata(...)`)."""
    error: RunError | None = None
    """Set when the run failed."""
    steps: StepProgress | None = None
    """Checkpoint progress (SDK tasks)."""
    waiting_for: WaitingFor | None = None
    """Phase `Waiting`: what the run waits on."""
    parent: Annotated[str, StringConstraints(max_length=253)] | None = None
    """The TaskRun whose code started this one (child runs)."""
    children: (
        Annotated[list[Annotated[str, StringConstraints(max_length=253)]], Field(max_length=1000)]
        | None
    ) = None
    """TaskRuns this run's code started, oldest first (the first 1,000)."""


class TaskRun(CRDModel):
    """A Drover TaskRun (drover.dev/v1alpha1)."""

    api_version: Literal["drover.dev/v1alpha1"] = "drover.dev/v1alpha1"
    """API version."""
    kind: Literal["TaskRun"] = "TaskRun"
    """Kind."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard object metadata."""
    spec: TaskRunSpec
    """Desired state."""
    status: TaskRunStatus | None = None
    """Observed state."""
