"""The Task resource: what to run, how to retry it, how many at once, and on what schedule."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from drover_operator.crd.base import CEL, CRDModel, JSONObject, JSONValue, rules
from drover_operator.crd.common import ConditionList, ObjectName
from drover_operator.crd.durations import (
    Duration,
    PositiveDuration,
    cel_is_duration,
    parse_duration,
)
from drover_operator.crd.podspec import EnvFromSource, EnvVar, PodTemplate, ResourceRequirements

#: `package.module:function` (attribute paths such as `module:Class.method` are allowed).
_DOTTED_NAME = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
ENTRYPOINT_PATTERN = f"^{_DOTTED_NAME}:{_DOTTED_NAME}$"
#: Five to seven whitespace-separated fields (six: seconds first; seven: and a year last), or
#: a `@hourly`-style macro. Real parsing (ranges, steps, names) happens in the operator with
#: croniter; this catches prose/typos.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[^\s]+([ \t]+[^\s]+){4,6})$"
)
#: IANA zone names look like `UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`,
#: `Etc/GMT+2`; whether the zone exists is checked by the operator.
TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"

MAX_ATTEMPTS_LIMIT = 100


class RetryPolicy(CRDModel):
    """How failed attempts are retried. Delay before attempt n+1 is
    `min(maxDelay, minDelay * factor^(n-1))`, times a random factor in [1, 2) if `randomize`."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                "!has(self.minDelay) || !has(self.maxDelay)"
                f" || !{cel_is_duration('self.minDelay')} || !{cel_is_duration('self.maxDelay')}"
                " || duration(self.minDelay) <= duration(self.maxDelay)",
                "minDelay must be less than or equal to maxDelay",
                field_path=".minDelay",
            )
        )
    )

    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)] = 3
    """Total attempts including the first; `1` disables retries."""
    factor: Annotated[float, Field(ge=1, le=100)] = 2
    """Multiplier applied to the delay after each failed attempt (`1` = constant delay)."""
    min_delay: PositiveDuration = "1s"
    """Delay before the first retry."""
    max_delay: PositiveDuration = "60s"
    """Upper bound for the delay between attempts."""
    randomize: bool = True
    """Multiply each delay by a random factor in [1, 2) to spread retries out (jitter)."""
    non_retryable_exit_codes: (
        Annotated[
            list[Annotated[int, Field(ge=1, le=255)]],
            Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
        ]
        | None
    ) = None
    """Exit codes that fail the run at once, without further attempts (e.g. `[2]` for bad
    input). SDK tasks can also raise `drover.NonRetryableError`."""

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetryPolicy:
        if parse_duration(self.min_delay) > parse_duration(self.max_delay):
            raise ValueError("minDelay must be less than or equal to maxDelay")
        codes = self.non_retryable_exit_codes or []
        if len(set(codes)) != len(codes):
            raise ValueError("nonRetryableExitCodes must not contain duplicates")
        return self

    def backoff(self, failed_attempts: int, jitter: float = 1.0) -> timedelta:
        """Delay before the next attempt after `failed_attempts` (≥ 1) failures; `jitter` is
        the random factor in [1, 2) (ignored unless `randomize`)."""
        base = parse_duration(self.min_delay) * self.factor ** max(failed_attempts - 1, 0)
        delay = min(parse_duration(self.max_delay), base)
        return delay * jitter if self.randomize else delay


class Timeouts(CRDModel):
    """Time limits for each attempt."""

    max_duration: PositiveDuration | None = None
    """Wall-clock limit for one attempt; the attempt is stopped and fails with `TimedOut`
    (retryable). Unset = no limit."""
    heartbeat: Annotated[
        PositiveDuration,
        CEL(
            f"!{cel_is_duration('self')} || duration(self) >= duration('3s')", "must be at least 3s"
        ),
    ] = "90s"
    """SDK tasks: an attempt with no heartbeat for this long is stalled, stopped and retried
    from its last checkpoint. The runner beats every third of this. Ignored for `command`."""
    pending: PositiveDuration | None = None
    """How long an attempt may wait for its pod to start (scheduling, image pull) before it
    fails as retryable. Unset = wait indefinitely."""

    @model_validator(mode="after")
    def _heartbeat_floor(self) -> Timeouts:
        if parse_duration(self.heartbeat) < timedelta(seconds=3):
            raise ValueError("heartbeat must be at least 3s")
        return self


class Concurrency(CRDModel):
    """How many runs of this Task may hold a slot (be starting or running) at once."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                "!has(self.limit) || !has(self.perKeyLimit) || self.perKeyLimit <= self.limit",
                "perKeyLimit must be less than or equal to limit",
                field_path=".perKeyLimit",
            )
        )
    )

    limit: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Maximum concurrent runs of the Task. Unset = unlimited."""
    per_key_limit: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Maximum concurrent runs sharing one `concurrencyKey` (e.g. one per tenant). Runs
    without a key only count against `limit`."""
    slot_release: Literal["Completion", "PodGone"] = "Completion"
    """When a finished, stalled or canceled attempt gives its slot back. `Completion` (the
    default): as soon as Drover records the end, while its pod may still be stopping, so the
    next run starts at once and pods can briefly outnumber the limit. `PodGone`: only once the
    pod has terminated or is deleted, so pods never outnumber the limit (licences, GPUs), like
    a Job's `podReplacementPolicy: Failed`; a pod on a lost node holds its slot until it is
    deleted."""

    @model_validator(mode="after")
    def _per_key_within_limit(self) -> Concurrency:
        limit, per_key = self.limit, self.per_key_limit
        if limit is not None and per_key is not None and per_key > limit:
            raise ValueError("perKeyLimit must be less than or equal to limit")
        return self


class Schedule(CRDModel):
    """Create a TaskRun on a cron schedule."""

    cron: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=CRON_PATTERN)]
    """Standard cron expression (`0 * * * *`) or macro (`@hourly`); six fields put seconds
    first (`*/10 * * * * *`), a seventh is the year. Evaluated in `timezone`."""
    timezone: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=TIMEZONE_PATTERN)
    ] = "UTC"
    """IANA time zone name, e.g. `Europe/Berlin`."""
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    """When a run from this schedule is still unfinished: `Allow` another, `Forbid` (skip
    this tick), or `Replace` (cancel the unfinished run, then start a new one)."""
    starting_deadline: PositiveDuration | None = None
    """A tick missed by more than this (e.g. operator down) is skipped. Unset = always
    catch up with (only) the most recent missed tick."""
    suspend: bool = False
    """Pause the schedule without deleting it; runs already created are unaffected, and
    ticks while suspended are not caught up."""
    payload: JSONValue = None
    """Payload of every scheduled run (any JSON)."""


class History(CRDModel):
    """Cleanup of finished TaskRuns (their full history stays in Postgres)."""

    ttl_after_finished: Duration | None = None
    """Delete a finished TaskRun this long after it completes. Unset = keep (subject to
    `keepSucceeded`/`keepFailed`)."""
    keep_succeeded: Annotated[int, Field(ge=0, le=100_000)] | None = None
    """Keep at most this many succeeded TaskRuns of this Task (oldest deleted first)."""
    keep_failed: Annotated[int, Field(ge=0, le=100_000)] | None = None
    """Keep at most this many failed, canceled, timed-out or expired TaskRuns."""


#: An HTTP header name (RFC 9110 token).
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


class Webhook(CRDModel):
    """Trigger runs of this Task from signed HTTP requests (GitHub, Stripe, any sender that
    signs its body with HMAC-SHA256)."""

    idempotency_header: (
        Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=HEADER_NAME_PATTERN)]
        | None
    ) = None
    """Request header whose value is the run's idempotency key, so a redelivery starts no
    second run; default `Idempotency-Key` (e.g. `X-GitHub-Delivery` for GitHub)."""


_EXACTLY_ONE_PROGRAM = [
    CEL(
        "!(has(self.entrypoint) && has(self.command))",
        "entrypoint and command are mutually exclusive: set entrypoint for an SDK task or"
        " command (and args) for any other container",
        field_path=".command",
    ),
    CEL(
        "has(self.entrypoint) || has(self.command)",
        "one of entrypoint or command is required",
    ),
    CEL(
        "!has(self.args) || has(self.command)",
        "args requires command (SDK tasks get their input from the run's payload)",
        field_path=".args",
    ),
]


class TaskSpec(CRDModel):
    """Desired state of a Task."""

    model_config = ConfigDict(json_schema_extra=rules(*_EXACTLY_ONE_PROGRAM))

    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """What the task does, for humans (shown by dashboards)."""
    image: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^\S+$")]
    """Container image of the task pods."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """Image pull policy; defaults as in core/v1 (`Always` for `:latest`)."""
    entrypoint: (
        Annotated[str, StringConstraints(max_length=512, pattern=ENTRYPOINT_PATTERN)] | None
    ) = None
    """SDK tasks: `module.path:function` run by the Drover runner with the run's payload."""
    command: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]],
            Field(min_length=1, max_length=256),
        ]
        | None
    ) = None
    """Any container: the command to execute (exit code 0 = success)."""
    args: (
        Annotated[list[Annotated[str, StringConstraints(max_length=32768)]], Field(max_length=1024)]
        | None
    ) = None
    """Arguments to `command`."""
    working_dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    """Working directory of the task container; defaults to the image's."""
    env: (
        Annotated[
            list[EnvVar],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Environment variables of the task container."""
    env_from: Annotated[list[EnvFromSource], Field(max_length=64)] | None = None
    """ConfigMaps/Secrets whose keys become environment variables."""
    resources: ResourceRequirements | None = None
    """CPU/memory requests and limits of the task container."""
    service_account_name: ObjectName | None = None
    """ServiceAccount the pods run as; defaults to the namespace's `default`."""
    pod_template: PodTemplate | None = None
    """Overrides for task pods: labels, annotations, nodeSelector, tolerations, volumes…"""
    retry: Annotated[RetryPolicy, Field(json_schema_extra={"default": {}})] = Field(
        default_factory=RetryPolicy
    )
    """Retry policy; defaults apply when omitted."""
    timeouts: Annotated[Timeouts, Field(json_schema_extra={"default": {}})] = Field(
        default_factory=Timeouts
    )
    """Per-attempt time limits; defaults apply when omitted."""
    concurrency: Concurrency | None = None
    """Concurrency limits. Unset = unlimited."""
    schedule: Schedule | None = None
    """Run on a cron schedule."""
    history: History | None = None
    """When finished TaskRuns are deleted."""
    payload_schema: JSONObject | None = None
    """JSON Schema (draft 2020-12) every run's payload must satisfy; a run whose payload
    does not is failed with reason `InvalidPayload` before any pod starts."""
    webhook: Webhook | None = None
    """Serve a signed webhook that triggers runs (`{}` for the defaults). The operator keeps
    the signing key in a Secret `<task>-webhook`; deleting the Secret rotates it."""

    @model_validator(mode="after")
    def _one_program(self) -> TaskSpec:
        if self.entrypoint is not None and self.command is not None:
            raise ValueError("entrypoint and command are mutually exclusive")
        if self.entrypoint is None and self.command is None:
            raise ValueError("one of entrypoint or command is required")
        if self.args is not None and self.command is None:
            raise ValueError("args requires command")
        names = [e.name for e in self.env or []]
        if len(set(names)) != len(names):
            raise ValueError("env names must be unique")
        return self


class WebhookStatus(CRDModel):
    """A Task's webhook as served."""

    path: Annotated[str, StringConstraints(max_length=512)] | None = None
    """The path on the operator's API (`/v1/hooks/<namespace>/<task>`); sign requests with
    the key in the Secret named by `secretName`."""
    secret_name: Annotated[str, StringConstraints(max_length=253)] | None = None
    """The Secret holding the signing key (key `key`)."""


class TaskStatus(CRDModel):
    """Observed state of a Task, written by the operator."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` this status reflects."""
    conditions: ConditionList | None = None
    """`Ready`: True when the Task is valid and accepting runs; False with a reason such as
    `InvalidSchedule`, `InvalidTimezone` or `InvalidPayloadSchema` and a message."""
    active: Annotated[int, Field(ge=0)] | None = None
    """Runs currently holding a concurrency slot (starting or running)."""
    queued: Annotated[int, Field(ge=0)] | None = None
    """Runs waiting for a slot or their `notBefore` time."""
    waiting: Annotated[int, Field(ge=0)] | None = None
    """Runs suspended on a durable wait (phase `Waiting`): no pod, no slot."""
    last_schedule_time: datetime | None = None
    """When the schedule last created a run."""
    next_schedule_time: datetime | None = None
    """When the schedule will next create a run."""
    webhook: WebhookStatus | None = None
    """Where the Task's webhook is served (when `spec.webhook` is set)."""


class Task(CRDModel):
    """A Drover Task (drover.dev/v1alpha1)."""

    api_version: Literal["drover.dev/v1alpha1"] = "drover.dev/v1alpha1"
    """API version."""
    kind: Literal["Task"] = "Task"
    """Kind."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard object metadata."""
    spec: TaskSpec
    """Desired state."""
    status: TaskStatus | None = None
    """Observed state."""
