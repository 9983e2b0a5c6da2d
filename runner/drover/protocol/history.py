"""Bodies of the run history's detail views and the Task overview (`/v1/namespaces/{ns}/...`,
also through the Kubernetes API server), shared by the operator, `drover.Client`, the
command line and the dashboard: a run's timeline (attempts, steps, waits), its log lines,
and each Task's load and recent outcomes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from drover.protocol.wire import Reply


class AttemptView(Reply):
    """One execution (pod) of an attempt. An attempt resumed after a durable wait runs in a
    new pod: several executions then share an `attempt`."""

    attempt: int
    """The try under the Task's retry policy, as users count attempts."""
    execution: int
    """The pod's number among all of the run's pods."""
    pod: str
    state: str
    """`Admitted`, `Running`, `Succeeded`, `Failed`, `TimedOut`, `Canceled`, `Lost`,
    `Suspended`."""
    admitted_at: datetime | None = Field(default=None, alias="admittedAt")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    finished_at: datetime | None = Field(default=None, alias="finishedAt")
    exit_code: int | None = Field(default=None, alias="exitCode")
    reason: str | None = None
    message: str | None = None


class StepView(Reply):
    """A recorded step, or a workflow position (`wait:*`, `trigger:*`, `batch:*`, `token`)."""

    seq: int
    name: str
    attempt: int
    """The attempt (try) that recorded it."""
    started_at: datetime | None = Field(default=None, alias="startedAt")
    """When it began, as the runner reported it; for a wait, when the wait began. From
    runners before protocol 2: when its attempt reached it (the previous checkpoint of that
    attempt, or the attempt's start)."""
    finished_at: datetime = Field(alias="finishedAt")
    """When its checkpoint was stored."""


class WaitView(Reply):
    """A position where the run waited, or waits."""

    seq: int
    kind: str
    """`Duration`, `Token` or `Runs`."""
    state: str
    """`pending` (waiting in its pod), `waiting` (suspended), `resolved`, `canceled`."""
    created_at: datetime = Field(alias="createdAt")
    resolved_at: datetime | None = Field(default=None, alias="resolvedAt")
    until: datetime | None = None
    """Duration: when it is (was) over."""
    token: str | None = None
    runs: list[str] | None = None
    """Runs: the awaited runs' names."""


class RunTimeline(Reply):
    """What happened in a run, in order: its executions, steps and waits."""

    name: str
    namespace: str
    attempts: list[AttemptView] = Field(default_factory=list)
    steps: list[StepView] = Field(default_factory=list)
    waits: list[WaitView] = Field(default_factory=list)


class LogEntry(Reply):
    """A line a run's code logged."""

    id: int
    """Increases through the run's lines: pass the last one as `after` for the next."""
    attempt: int
    execution: int | None = None
    time: datetime
    level: str
    logger: str = ""
    message: str


class LogPage(Reply):
    lines: list[LogEntry]


class TaskSummary(Reply):
    """A Task's load now and its outcomes in the window (by default the last 24 hours)."""

    namespace: str
    name: str
    ready: bool = True
    problem: str | None = None
    """Why no run of the Task can start, when it cannot."""
    limit: int | None = None
    """`concurrency.limit` (none: unlimited)."""
    per_key_limit: int | None = Field(default=None, alias="perKeyLimit")
    running: int = 0
    """Runs holding a slot (`Starting`, `Running`)."""
    queued: int = 0
    """Runs waiting for a slot or their time (`Queued`, `Retrying`)."""
    waiting: int = 0
    """Runs suspended on a durable wait (`Waiting`)."""
    succeeded: int = 0
    failed: int = 0
    """`Failed` and `TimedOut`, in the window."""
    canceled: int = 0
    """`Canceled` and `Expired`, in the window."""
    p50_seconds: float | None = Field(default=None, alias="p50Seconds")
    """Median start-to-finish time of the runs that succeeded in the window."""
    p95_seconds: float | None = Field(default=None, alias="p95Seconds")
    p99_seconds: float | None = Field(default=None, alias="p99Seconds")
    schedule: str | None = None
    """The cron schedule, if the Task has one."""
    next_schedule_time: datetime | None = Field(default=None, alias="nextScheduleTime")


class TaskSummaryList(Reply):
    items: list[TaskSummary]
    window: str
    """The window outcomes are counted over, as a duration (`24h`)."""
    since: datetime
