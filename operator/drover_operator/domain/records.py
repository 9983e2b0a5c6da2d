"""The records the store returns: typed rows of its tables and queries.

Plain frozen dataclasses, filled by psycopg's `class_row` (the column names are the field
names). UUID columns arrive as strings, timestamps as aware datetimes, JSON as Python values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

# -- Tasks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRecord:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any]
    #: Why no run of the Task can start (`Reason: message`), or None.
    invalid: str | None


@dataclass(frozen=True)
class TaskCounts:
    """What a Task's status shows."""

    namespace: str
    name: str
    generation: int
    invalid: str | None
    schedule_problem: str | None
    active: int
    queued: int
    #: The Task declares `spec.webhook`.
    webhook: bool = False
    #: Runs suspended on a durable wait.
    waiting: int = 0


# -- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """A run: its TaskRun's spec as recorded, and everything that happened to it."""

    id: str
    namespace: str
    name: str
    task: str
    generation: int
    concurrency_key: str | None
    priority: int
    payload: Any
    tags: dict[str, str] | None
    phase: str
    attempt: int
    eligible_at: dt.datetime | None
    expires_at: dt.datetime | None
    created_at: dt.datetime
    recorded_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    reason: str | None
    message: str | None
    error: dict[str, Any] | None
    output: Any
    cancel_requested: bool
    deleted_at: dt.datetime | None
    version: int
    pushed_version: int
    metadata: dict[str, Any]
    scheduled_at: dt.datetime | None
    #: Why a run that could start waits (`ConcurrencyLimit`, `PerKeyLimit`), and details.
    wait_reason: str | None
    wait_message: str | None
    #: Every pod of the run, numbered (an attempt resumed after a wait runs in a new one).
    execution: int = 0
    #: The next admission resumes the current attempt (a wait resolved).
    resume: bool = False
    #: What a `Waiting` run waits on (`status.waitingFor`).
    waiting_for: dict[str, Any] | None = None
    #: The run that triggered this one, for child runs.
    parent_id: str | None = None
    parent_name: str | None = None
    child_count: int = 0


@dataclass(frozen=True)
class UnpushedRun(RunRecord):
    """A run whose TaskRun status is behind its record, with what its condition needs to
    know about its Task."""

    task_exists: bool = True
    task_invalid: str | None = None


@dataclass(frozen=True)
class AttemptSummary:
    """An attempt's execution (one pod) as `status.attempts` shows it."""

    number: int
    try_number: int
    pod_name: str
    state: str
    admitted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    exit_code: int | None
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class AttemptRecord:
    """An execution of an attempt (one pod), as its transactions read it under lock.
    `number` counts every execution of the run; `try_number` is the attempt it belongs to."""

    run_id: str
    number: int
    try_number: int
    namespace: str
    task: str
    pod_name: str
    state: str
    active: bool
    admitted_at: dt.datetime
    started_at: dt.datetime | None
    task_spec: dict[str, Any]
    finished_at: dt.datetime | None = None


@dataclass(frozen=True)
class WaitingRun:
    """A run waiting for admission."""

    id: str
    name: str
    concurrency_key: str | None
    attempt: int
    created_at: dt.datetime
    eligible_at: dt.datetime | None
    #: Resuming the current attempt after a wait, rather than starting a new one.
    resume: bool = False


@dataclass(frozen=True)
class Queue:
    """A Task with runs due for admission."""

    namespace: str
    task: str


@dataclass(frozen=True)
class RunEvent:
    """A line of a run's history."""

    at: dt.datetime
    attempt: int | None
    type: str
    reason: str
    message: str


# -- what the converger acts on -----------------------------------------------------------------


@dataclass(frozen=True)
class PodToCreate:
    run_id: str
    number: int
    try_number: int
    max_duration: dt.timedelta | None
    pod_name: str
    task_spec: dict[str, Any]
    namespace: str
    name: str
    task: str


@dataclass(frozen=True)
class PodCreated:
    """An attempt whose pod was just marked created: seconds since its TaskRun's creation."""

    run_id: str
    number: int
    latency: float


@dataclass(frozen=True)
class PodToStop:
    run_id: str
    number: int
    pod_name: str
    #: Seconds of grace; None: the pod's own (0 for a frozen process).
    kill_grace: int | None
    namespace: str


@dataclass(frozen=True)
class HeldSlot:
    """An ended attempt still holding its slot (`slotRelease: PodGone`) until its pod is
    seen gone."""

    run_id: str
    number: int
    namespace: str
    pod_name: str


@dataclass(frozen=True)
class DueAttempt:
    """An active attempt past one of its deadlines."""

    run_id: str
    number: int
    pod_name: str
    namespace: str
    heartbeat_timeout: dt.timedelta | None


@dataclass(frozen=True)
class PendingEvent:
    """An Event recorded in a transaction and not yet posted to Kubernetes, on a TaskRun
    (`source` "run") or a Task ("task")."""

    source: str
    id: int
    kind: str
    namespace: str
    name: str
    uid: str
    at: dt.datetime
    type: str
    reason: str
    message: str


# -- schedules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRecord:
    """A Task's schedule cursor."""

    namespace: str
    task: str
    task_uid: str
    generation: int
    schedule_key: str
    problem: str | None
    cursor_at: dt.datetime | None
    next_at: dt.datetime | None
    last_schedule_time: dt.datetime | None


@dataclass(frozen=True)
class ScheduleDue:
    """A Task whose schedule needs a decision; `fresh`: new, or the Task was recreated."""

    namespace: str
    name: str
    uid: str
    fresh: bool


@dataclass(frozen=True)
class ScheduledRun:
    """A run a schedule decided to create (an outbox row until its TaskRun exists)."""

    namespace: str
    name: str
    task: str
    task_uid: str
    scheduled_at: dt.datetime
    payload: Any
    run_uid: str | None


@dataclass(frozen=True)
class ScheduleStatus:
    namespace: str
    task: str
    last_schedule_time: dt.datetime | None
    next_at: dt.datetime | None


# -- history -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRef:
    """A run by its TaskRun's identity."""

    id: str
    namespace: str
    name: str


# -- the run API -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiAttempt:
    """An execution as the run API authenticates and serves it."""

    run_id: str
    number: int
    try_number: int
    active: bool
    token_hash: str | None
    task_spec: dict[str, Any]
    heartbeat_timeout: dt.timedelta | None
    namespace: str
    name: str
    task: str
    current_execution: int
    payload: Any
    metadata: dict[str, Any]
    scheduled_at: dt.datetime | None
    phase: str
    cancel_requested: bool

    @property
    def current(self) -> bool:
        """The run's latest execution (a zombie's is not)."""
        return self.current_execution == self.number


@dataclass(frozen=True)
class StepValue:
    seq: int
    name: str
    value: Any


@dataclass(frozen=True)
class LogRecord:
    id: int
    #: The try (what users see as the attempt) ...
    attempt: int
    at: dt.datetime
    level: str
    logger: str
    message: str
    #: ... and the execution (pod) that logged the line.
    execution: int = 0


# -- overviews (the command line, the dashboard) -----------------------------------------------


@dataclass(frozen=True)
class StepTiming:
    """A recorded step (or workflow position) on the run's timeline. `started_at` is when it
    began, as the runner reported it; for a wait, when the wait began; from older runners,
    when its attempt reached it (the previous checkpoint, or the attempt's start).
    `finished_at` is when its checkpoint was stored."""

    seq: int
    name: str
    attempt: int
    started_at: dt.datetime | None
    finished_at: dt.datetime


@dataclass(frozen=True)
class WaitSummary:
    """A position where the run waited (or waits): on a time, a token or other runs."""

    seq: int
    kind: str
    state: str
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    wake_at: dt.datetime | None
    token_id: str | None
    #: The awaited runs' names (ids of runs not recorded yet).
    runs: list[str] | None


@dataclass(frozen=True)
class TaskSummaryRecord:
    """A Task's load now and its outcomes in a recent window."""

    namespace: str
    name: str
    spec: dict[str, Any]
    invalid: str | None
    running: int
    queued: int
    waiting: int
    succeeded: int
    failed: int
    canceled: int
    #: Start to finish of the runs that succeeded in the window, in seconds.
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None = None
    #: The schedule's next tick (a Task with a cron schedule).
    next_at: dt.datetime | None = None
