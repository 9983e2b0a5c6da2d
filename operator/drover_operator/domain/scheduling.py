"""What a schedule does at a tick (pure): which tick runs, which are missed, and what
`concurrencyPolicy` makes of the runs still open.

The store calls `decide_schedule` inside the Task's schedule transaction, with the records it
read under lock, and writes the decision it returns; the converger then creates and cancels
TaskRuns from what was written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from drover.protocol.timestamps import rfc3339
from drover_operator.crd import TaskSpec, parse_duration
from drover_operator.crd.task import Schedule
from drover_operator.domain.cron import COUNT_CAP, CronSchedule, ScheduleError, decide, run_name
from drover_operator.domain.lifecycle import EventRecord
from drover_operator.domain.records import ScheduleRecord, TaskRecord


@dataclass(frozen=True)
class NewScheduledRun:
    """A TaskRun to create for a tick."""

    name: str
    scheduled_at: dt.datetime
    payload: Any


@dataclass(frozen=True)
class ScheduleDecision:
    """Everything one schedule transaction writes."""

    record: ScheduleRecord
    events: tuple[EventRecord, ...] = ()
    create: NewScheduledRun | None = None
    #: Open scheduled runs to cancel (concurrencyPolicy Replace).
    cancel: tuple[str, ...] = ()
    #: Due ticks that got no run.
    missed: int = 0
    #: What became of the tick that was due: started, replaced, skipped; None: no tick.
    result: str | None = None


def schedule_key(schedule: Schedule) -> str:
    """What restarts the cursor when changed: ticks before such a change never catch up."""
    return f"{schedule.cron}\n{schedule.timezone}\n{schedule.suspend}"


def decide_schedule(
    task: TaskRecord,
    previous: ScheduleRecord | None,
    open_runs: list[str],
    now: dt.datetime,
    created: dt.datetime | None,
) -> ScheduleDecision:
    """Decide a Task's due tick. `previous` is None for a new schedule (or a recreated Task);
    `open_runs` are its scheduled runs not yet finished, oldest first; `created` is when the
    Task was created (the cursor of a new schedule starts there)."""
    record = ScheduleRecord(
        namespace=task.namespace,
        task=task.name,
        task_uid=task.uid,
        generation=task.generation,
        schedule_key="",
        problem=None,
        cursor_at=previous.cursor_at if previous else (created or now),
        next_at=None,
        last_schedule_time=previous.last_schedule_time if previous else None,
    )
    if task.invalid is not None:
        # No run of it could start (its Ready condition says why): runs piling up for every
        # tick would all start at once when it is fixed. Decided again then.
        return ScheduleDecision(record)
    schedule = TaskSpec.model_validate(task.spec).schedule
    assert schedule is not None
    key = schedule_key(schedule)
    record = dataclasses.replace(record, schedule_key=key)
    # Ticks before the Task existed, or before its cron, zone or suspend last changed, are
    # never caught up.
    if previous is not None and (previous.schedule_key != key or previous.cursor_at is None):
        record = dataclasses.replace(record, cursor_at=now)
    try:
        cron = CronSchedule.parse(schedule.cron, schedule.timezone, now)
    except ScheduleError as exc:
        problem = (
            f"{exc.reason}: {exc.message}; the schedule creates no runs"
            " (TaskRuns created directly still run)"
        )
        warned = previous is not None and previous.problem == problem
        warning = () if warned else (EventRecord("Warning", exc.reason, exc.message),)
        return ScheduleDecision(dataclasses.replace(record, problem=problem), warning)
    if schedule.suspend:
        return ScheduleDecision(record)
    deadline = parse_duration(schedule.starting_deadline) if schedule.starting_deadline else None
    assert record.cursor_at is not None
    decision = decide(cron, record.cursor_at, now, deadline)
    record = dataclasses.replace(record, cursor_at=decision.cursor, next_at=decision.next_at)
    events: list[EventRecord] = []
    if decision.missed:
        plus = "+" if decision.missed >= COUNT_CAP - 1 else ""
        since = rfc3339(decision.first_missed or decision.cursor)
        missed = f"{decision.missed}{plus} tick(s) missed since {since}"
        if decision.too_late:
            message = (
                f"{missed}; the latest, {rfc3339(decision.cursor)}, is more than"
                f" startingDeadline {schedule.starting_deadline} old: no run"
            )
        else:
            message = f"{missed}; one run for the latest only"
        events.append(EventRecord("Warning", "MissedSchedule", message))
    tick = decision.run_at
    if tick is None:
        return ScheduleDecision(record, tuple(events), missed=decision.missed)
    name = run_name(task.name, tick, with_seconds=cron.with_seconds)
    policy = schedule.concurrency_policy
    if open_runs and policy == "Forbid":
        events.append(
            EventRecord(
                "Normal",
                "ScheduleSkipped",
                f"tick {rfc3339(tick)} skipped: {', '.join(open_runs[:5])} still unfinished"
                " (concurrencyPolicy Forbid)",
            )
        )
        return ScheduleDecision(record, tuple(events), missed=decision.missed, result="skipped")
    cancel: tuple[str, ...] = ()
    result = "started"
    if open_runs and policy == "Replace":
        cancel, result = tuple(open_runs), "replaced"
        events.append(
            EventRecord(
                "Normal",
                "ScheduleReplaced",
                f"canceling {', '.join(open_runs[:5])} for {name} (concurrencyPolicy Replace)",
            )
        )
    events.append(EventRecord("Normal", "Scheduled", f"created TaskRun {name} for {rfc3339(tick)}"))
    return ScheduleDecision(
        dataclasses.replace(record, last_schedule_time=tick),
        tuple(events),
        create=NewScheduledRun(name, tick, schedule.payload),
        cancel=cancel,
        missed=decision.missed,
        result=result,
    )
