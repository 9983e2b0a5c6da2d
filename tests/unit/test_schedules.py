"""Cron schedules (pure): fire times in a time zone across DST changes, run names, and the
catch-up decision after missed ticks. Time is always injected."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from drover.protocol.timestamps import rfc3339
from drover_operator.domain.cron import (
    COUNT_CAP,
    CronSchedule,
    ScheduleError,
    decide,
    run_name,
)
from drover_operator.domain.records import ScheduleRecord, TaskCounts, TaskRecord
from drover_operator.domain.scheduling import decide_schedule
from drover_operator.domain.status import task_status

UTC = dt.UTC
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    """`2024-03-31 01:00` in UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def ticks(cron: str, tz: str, start: str, end: str) -> list[str]:
    """Fire times in (start, end], as local wall time with offset, e.g. `03:00+0200`."""
    schedule = CronSchedule.parse(cron, tz)
    out = []
    for tick in schedule.iter_after(at(start)):
        if tick > at(end):
            break
        out.append(tick.astimezone(schedule.zone).strftime("%d %H:%M:%S%z"))
    return out


def test_parse_reports_the_bad_value() -> None:
    with pytest.raises(ScheduleError) as bad_zone:
        CronSchedule.parse("* * * * *", "Mars/Olympus")
    assert bad_zone.value.reason == "InvalidTimezone"
    assert "'Mars/Olympus'" in bad_zone.value.message
    assert "spec.schedule.timezone" in bad_zone.value.message
    for cron in ("61 * * * *", "*/0 * * * *", "a b c d e", "* * * * * 99"):
        with pytest.raises(ScheduleError) as bad_cron:
            CronSchedule.parse(cron, "UTC")
        assert bad_cron.value.reason == "InvalidSchedule"
        assert repr(cron) in bad_cron.value.message
    # Valid syntax, but April has no 31st: it never fires.
    with pytest.raises(ScheduleError, match="never fires"):
        CronSchedule.parse("0 0 31 4 *", "UTC", NOW)
    with pytest.raises(ScheduleError, match="never fires"):
        CronSchedule.parse("0 0 0 1 1 * 2020", "UTC", NOW)  # a year long past


def test_fields_macros_and_seconds() -> None:
    hourly = CronSchedule.parse("@hourly", "UTC")
    assert not hourly.with_seconds and hourly.every_hour
    assert hourly.next_after(at("2026-01-01 10:15")) == at("2026-01-01 11:00")
    # Six fields: seconds first (as in Quartz), not croniter's seconds-last default.
    seconds = CronSchedule.parse("*/20 * * * * *", "Europe/Berlin")
    assert seconds.with_seconds
    assert seconds.next_after(at("2026-01-01 10:00:05")) == at("2026-01-01 10:00:20")
    assert seconds.latest_at_or_before(at("2026-01-01 10:00:59.9")) == at("2026-01-01 10:00:40")
    yearly = CronSchedule.parse("0 30 2 * * * 2030", "UTC")
    assert yearly.next_after(NOW) == at("2030-01-01 02:30")
    daily = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    assert not daily.every_hour
    assert daily.next_after(at("2026-01-01 00:00")) == at("2026-01-01 01:30")  # 02:30 CET
    # Strictly after / at or before, at whole seconds and in between.
    assert daily.next_after(at("2026-01-01 01:30")) == at("2026-01-02 01:30")
    assert daily.latest_at_or_before(at("2026-01-01 01:30")) == at("2026-01-01 01:30")
    assert daily.latest_at_or_before(at("2026-01-01 01:29:59.999")) == at("2025-12-31 01:30")


def test_berlin_spring_forward() -> None:
    # 2024-03-31: clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist that night.
    assert ticks("30 2 * * *", "Europe/Berlin", "2024-03-29 12:00", "2024-04-01 12:00") == [
        "30 02:30:00+0100",
        "31 03:00:00+0200",  # at the transition, once
        "01 02:30:00+0200",
    ]
    # Every 15 minutes: the skipped hour is skipped, nothing doubles up at 03:00.
    assert ticks("*/15 * * * *", "Europe/Berlin", "2024-03-31 00:20", "2024-03-31 01:35") == [
        "31 01:30:00+0100",
        "31 01:45:00+0100",
        "31 03:00:00+0200",
        "31 03:15:00+0200",
        "31 03:30:00+0200",
    ]


def test_berlin_fall_back() -> None:
    # 2024-10-27: clocks go back from 03:00 CEST to 02:00 CET; 02:00-02:59 happen twice.
    assert ticks("30 2 * * *", "Europe/Berlin", "2024-10-25 12:00", "2024-10-28 12:00") == [
        "26 02:30:00+0200",
        "27 02:30:00+0200",  # once, at the first occurrence
        "28 02:30:00+0100",
    ]
    # Hourly or more often: both occurrences, so real time between ticks stays 30 minutes.
    assert ticks("*/30 * * * *", "Europe/Berlin", "2024-10-26 23:10", "2024-10-27 02:10") == [
        "27 01:30:00+0200",
        "27 02:00:00+0200",
        "27 02:30:00+0200",
        "27 02:00:00+0100",
        "27 02:30:00+0100",
        "27 03:00:00+0100",
    ]
    hourly = ticks("0 * * * *", "Europe/Berlin", "2024-10-26 22:30", "2024-10-27 02:30")
    assert hourly == [
        "27 01:00:00+0200",
        "27 02:00:00+0200",
        "27 02:00:00+0100",
        "27 03:00:00+0100",
    ]


def test_new_york_transitions() -> None:
    # 2024-03-10: 02:00 EST -> 03:00 EDT. 2024-11-03: 02:00 EDT -> 01:00 EST.
    assert ticks("30 2 * * *", "America/New_York", "2024-03-09 00:00", "2024-03-11 12:00") == [
        "09 02:30:00-0500",
        "10 03:00:00-0400",
        "11 02:30:00-0400",
    ]
    assert ticks("30 1 * * *", "America/New_York", "2024-11-02 12:00", "2024-11-04 12:00") == [
        "03 01:30:00-0400",
        "04 01:30:00-0500",
    ]
    assert ticks("*/20 * * * *", "America/New_York", "2024-11-03 05:10", "2024-11-03 06:50") == [
        "03 01:20:00-0400",
        "03 01:40:00-0400",
        "03 01:00:00-0500",
        "03 01:20:00-0500",
        "03 01:40:00-0500",
    ]


@pytest.mark.parametrize(
    ("cron", "tz", "start"),
    [
        ("*/15 * * * *", "Europe/Berlin", "2024-10-26 22:00"),
        ("*/15 * * * *", "Europe/Berlin", "2024-03-30 23:00"),
        ("30 2 * * *", "Europe/Berlin", "2024-10-24 00:00"),
        ("30 2 * * *", "Europe/Berlin", "2024-03-28 00:00"),
        ("*/20 * * * *", "America/New_York", "2024-11-03 03:00"),
        ("0 */2 * * *", "America/New_York", "2024-03-10 00:00"),
        ("*/20 * * * * *", "Europe/Berlin", "2024-10-27 00:55"),
    ],
)
def test_backward_mirrors_forward_across_transitions(cron: str, tz: str, start: str) -> None:
    """Any instant: the last tick at or before it, then the next one after it, are adjacent
    ticks of the forward sequence; ticks strictly increase."""
    schedule = CronSchedule.parse(cron, tz)
    forward = []
    for tick in schedule.iter_after(at(start)):
        forward.append(tick)
        if len(forward) == 40:
            break
    assert forward == sorted(set(forward))
    probes = [t + d for t in forward[1:-1] for d in (-dt.timedelta(seconds=1), dt.timedelta(0))]
    for probe in probes:
        latest = schedule.latest_at_or_before(probe)
        assert latest is not None and latest <= probe
        i = forward.index(latest)
        assert forward[i + 1] > probe and schedule.next_after(probe) == forward[i + 1]


def test_run_names_are_deterministic_and_valid() -> None:
    tick = at("2024-10-27 00:30")
    assert run_name("nightly-report", tick, with_seconds=False) == "nightly-report-202410270030"
    assert run_name("poll", at("2024-10-27 00:30:20"), with_seconds=True) == "poll-20241027003020"
    # The same tick, however it is written, gives the same name.
    berlin = tick.astimezone(CronSchedule.parse("@daily", "Europe/Berlin").zone)
    assert run_name("t", berlin, with_seconds=False) == run_name("t", tick, with_seconds=False)
    longest = run_name("a" * 63, tick, with_seconds=True)
    assert len(longest) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", longest)
    assert rfc3339(berlin) == "2024-10-27T00:30:00Z"


def test_decide_nothing_due_and_one_due() -> None:
    every_minute = CronSchedule.parse("* * * * *", "UTC")
    idle = decide(every_minute, at("2026-01-01 10:00"), at("2026-01-01 10:00:30"))
    assert idle.run_at is None and idle.missed == 0 and idle.cursor == at("2026-01-01 10:00")
    assert idle.next_at == at("2026-01-01 10:01")
    due = decide(every_minute, at("2026-01-01 10:00"), at("2026-01-01 10:01:00.004"))
    assert due.run_at == at("2026-01-01 10:01") and due.missed == 0 and not due.too_late
    assert due.cursor == at("2026-01-01 10:01") and due.next_at == at("2026-01-01 10:02")


def test_decide_after_downtime_runs_only_the_latest_tick() -> None:
    every_minute = CronSchedule.parse("* * * * *", "UTC")
    cursor, now = at("2026-01-01 10:00"), at("2026-01-01 10:30:20")
    caught_up = decide(every_minute, cursor, now)
    assert caught_up.run_at == at("2026-01-01 10:30")
    assert caught_up.missed == 29 and caught_up.first_missed == at("2026-01-01 10:01")
    assert caught_up.cursor == at("2026-01-01 10:30") and caught_up.next_at == at(
        "2026-01-01 10:31"
    )
    # Deciding again at the same moment (a restart, another replica) runs nothing more.
    assert decide(every_minute, caught_up.cursor, now).run_at is None
    within = decide(every_minute, cursor, now, dt.timedelta(seconds=30))
    assert within.run_at == at("2026-01-01 10:30")
    late = decide(every_minute, cursor, now, dt.timedelta(seconds=10))
    assert late.run_at is None and late.too_late and late.missed == 30
    assert late.cursor == at("2026-01-01 10:30")  # decided: never run later
    assert decide(every_minute, late.cursor, at("2026-01-01 10:31:01")).run_at == at(
        "2026-01-01 10:31"
    )


def test_decide_counts_a_flood_without_iterating_it() -> None:
    every_second = CronSchedule.parse("* * * * * *", "UTC")
    decision = decide(every_second, at("2025-01-01 00:00"), at("2026-01-01 00:00:00.5"))
    assert decision.run_at == at("2026-01-01 00:00") and decision.missed == COUNT_CAP - 1


def test_a_bad_schedule_makes_the_task_not_ready() -> None:
    problem = "InvalidTimezone: spec.schedule.timezone 'Mars/Olympus' is not a known zone"
    [ready] = task_status(TaskCounts("ns", "t", 2, None, problem, 0, 0))["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidTimezone")
    assert ready["message"] == problem
    [ready] = task_status(TaskCounts("ns", "t", 2, None, None, 0, 0))["conditions"]
    assert (ready["status"], ready["reason"]) == ("True", "Valid")


def _task(policy: str = "Allow", **schedule: object) -> TaskRecord:
    spec = {
        "image": "x",
        "command": ["true"],
        "schedule": {"cron": "*/5 * * * *", "concurrencyPolicy": policy, **schedule},
    }
    return TaskRecord("ns", "t", "uid-1", 1, spec, None)


def _cursor(task: TaskRecord, cursor: dt.datetime) -> ScheduleRecord:
    key = "*/5 * * * *\nUTC\nFalse"
    return ScheduleRecord("ns", "t", task.uid, 1, key, None, cursor, None, None)


def test_a_due_tick_creates_one_run_named_after_it() -> None:
    task = _task()
    decision = decide_schedule(
        task, _cursor(task, at("2026-01-01 10:00")), [], at("2026-01-01 10:05:01"), None
    )
    assert decision.create is not None and decision.create.name == "t-202601011005"
    assert decision.result == "started" and decision.record.cursor_at == at("2026-01-01 10:05")
    assert decision.record.next_at == at("2026-01-01 10:10")
    assert decision.record.last_schedule_time == at("2026-01-01 10:05")
    assert [e.reason for e in decision.events] == ["Scheduled"]


def test_a_new_schedule_starts_at_the_tasks_creation_and_never_catches_up_before() -> None:
    decision = decide_schedule(_task(), None, [], at("2026-01-01 10:07"), at("2026-01-01 10:06"))
    assert decision.create is None and decision.missed == 0
    assert decision.record.cursor_at == at("2026-01-01 10:06")


def test_forbid_skips_a_tick_while_a_run_is_open_and_replace_cancels_it() -> None:
    now = at("2026-01-01 10:05:01")
    forbid = _task("Forbid")
    skipped = decide_schedule(forbid, _cursor(forbid, at("2026-01-01 10:00")), ["t-1"], now, None)
    assert skipped.create is None and skipped.result == "skipped"
    assert skipped.record.cursor_at == at("2026-01-01 10:05")  # decided: never run later
    assert [e.reason for e in skipped.events] == ["ScheduleSkipped"]
    replace = _task("Replace")
    replaced = decide_schedule(
        replace, _cursor(replace, at("2026-01-01 10:00")), ["t-1"], now, None
    )
    assert replaced.cancel == ("t-1",) and replaced.create is not None
    assert replaced.result == "replaced"
    assert [e.reason for e in replaced.events] == ["ScheduleReplaced", "Scheduled"]


def test_an_invalid_cron_warns_once_and_creates_nothing() -> None:
    task = _task(timezone="Mars/Olympus")
    first = decide_schedule(task, None, [], at("2026-01-01 10:05:01"), None)
    assert first.create is None and first.record.problem is not None
    assert [e.reason for e in first.events] == ["InvalidTimezone"]
    again = decide_schedule(task, first.record, [], at("2026-01-01 10:10:01"), None)
    assert again.events == () and again.record.problem == first.record.problem
