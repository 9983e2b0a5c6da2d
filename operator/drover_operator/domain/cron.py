"""Cron schedules in a time zone (pure): fire times, run names, and the catch-up decision.

Cron fields are matched against wall-clock time in the schedule's zone by croniter, on naive
datetimes; turning wall times into instants is done here, because croniter's own handling of
aware datetimes runs a daily job twice on the night clocks go back. The rules are Vixie
cron's:

- **Clocks go forward**: a wall time that does not exist (02:30 on the night Berlin jumps from
  02:00 to 03:00) fires at the transition (03:00 CEST) — once, however many ticks fall in the
  gap.
- **Clocks go back**: a wall time that occurs twice fires at its first occurrence only, unless
  the schedule fires every hour (hour field `*`): then at both, so `*/15 * * * *` keeps firing
  every 15 minutes of real time through the repeated hour.

Six fields put seconds first (`*/10 * * * * *`), seven add a year at the end, as in Quartz.
Nothing here reads the clock: `now` is always a parameter.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass

from croniter import CroniterBadDateError, CroniterError, croniter

from drover.protocol.timestamps import rfc3339

UTC = dt.UTC

_SECOND = dt.timedelta(seconds=1)
_ZERO = dt.timedelta(0)
# Wall-clock candidates examined for one answer; far more than a fall-back hour of a
# per-second schedule (3600), so it only stops a runaway loop.
_MAX_STEPS = 100_000
# Missed ticks are counted up to this many (reported as "at least").
COUNT_CAP = 1000


class ScheduleError(ValueError):
    """A schedule the operator cannot use: `reason` is the Task condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CronSchedule:
    cron: str
    zone: zoneinfo.ZoneInfo
    #: A seconds field: run names carry seconds, and ticks can be less than a minute apart.
    with_seconds: bool
    #: The hour field matches every hour: repeated wall times fire twice (see module doc).
    every_hour: bool

    @classmethod
    def parse(cls, cron: str, timezone: str, now: dt.datetime | None = None) -> CronSchedule:
        """Check and compile a schedule; `now` (if given) also checks that it fires again."""
        try:
            zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(
                "InvalidTimezone",
                f"spec.schedule.timezone {timezone!r} is not a known IANA time zone",
            ) from exc
        try:
            fields, _ = croniter.expand(cron, second_at_beginning=True)
        except (CroniterError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ScheduleError(
                "InvalidSchedule", f"spec.schedule.cron {cron!r} is not valid cron: {exc}"
            ) from exc
        hours = fields[1]
        schedule = cls(
            cron=cron,
            zone=zone,
            with_seconds=len(cron.split()) > 5,
            every_hour=hours == ["*"] or set(hours) == set(range(24)),
        )
        if now is not None and schedule.next_after(now) is None:
            raise ScheduleError(
                "InvalidSchedule", f"spec.schedule.cron {cron!r} never fires after {rfc3339(now)}"
            )
        return schedule

    # -- fire times -----------------------------------------------------------------------

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after `after` (UTC), or None if there is none."""
        return next(self.iter_after(after), None)

    def iter_after(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """Fire times strictly after `after`, ascending (UTC)."""
        local = after.astimezone(self.zone)
        wall = local.replace(tzinfo=None, microsecond=0, fold=0)
        # In the first pass of a repeated hour, wall times already passed still have their
        # second occurrence ahead (every-hour schedules): start where the repetition starts.
        back = self._fold_size(wall) if local.fold == 0 and self.every_hour else _ZERO
        for instant in self._forward(wall - back - _SECOND):
            if instant > after:
                yield instant

    def latest_at_or_before(self, at: dt.datetime) -> dt.datetime | None:
        """The last fire time at or before `at` (UTC), or None if there is none."""
        local = at.astimezone(self.zone)
        wall = local.replace(tzinfo=None, microsecond=0, fold=0)
        # In the second pass of a repeated hour, the first occurrences of later wall times
        # are already in the past.
        ahead = self._fold_size(wall) if local.fold == 1 else _ZERO
        for instant in self._backward(wall + ahead + _SECOND):
            if instant <= at:
                return instant
        return None

    def _utc(self, wall: dt.datetime, fold: int) -> dt.datetime:
        return wall.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)

    def _fold_size(self, wall: dt.datetime) -> dt.timedelta:
        """How long a repeated wall time's two occurrences are apart (zero if it is not)."""
        return max(_ZERO, self._utc(wall, 1) - self._utc(wall, 0))

    def _place(self, wall: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
        """When a wall-clock tick fires: its instant, and a second one for a repeated wall
        time of an every-hour schedule."""
        first, second = self._utc(wall, 0), self._utc(wall, 1)
        if first == second:
            return first, None
        if first < second:  # repeated (clocks went back)
            return first, second if self.every_hour else None
        # Skipped (clocks went forward): zoneinfo maps it to either side of the gap.
        return self._transition(second, first), None

    def _transition(self, before: dt.datetime, after: dt.datetime) -> dt.datetime:
        """The instant the UTC offset changes, between `before` and `after`."""
        target = after.astimezone(self.zone).utcoffset()
        lo, hi = int(before.timestamp()), int(after.timestamp())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if dt.datetime.fromtimestamp(mid, self.zone).utcoffset() == target:
                hi = mid
            else:
                lo = mid
        return dt.datetime.fromtimestamp(hi, UTC)

    def _walls(self, start: dt.datetime, *, forward: bool) -> Iterator[dt.datetime]:
        it = croniter(self.cron, start, second_at_beginning=True)
        for _ in range(_MAX_STEPS):
            try:
                wall: dt.datetime = (
                    it.get_next(dt.datetime) if forward else it.get_prev(dt.datetime)
                )
            except CroniterBadDateError:  # no match within croniter's search window
                return
            yield wall

    def _forward(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """Fire instants of the wall times after naive `start`, ascending, without repeats."""
        later: list[dt.datetime] = []  # second occurrences: after all first ones of the hour
        last = None
        for wall in self._walls(start, forward=True):
            first, second = self._place(wall)
            if second is None:
                for instant in later:
                    yield instant
                    last = instant
                later.clear()
            if first != last:
                yield first
                last = first
            if second is not None:
                later.append(second)
        yield from later

    def _backward(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """Fire instants of the wall times before naive `start`, descending, without repeats."""
        earlier: list[dt.datetime] = []  # first occurrences: before all second ones of the hour
        last = None
        for wall in self._walls(start, forward=False):
            first, second = self._place(wall)
            if second is not None:
                yield second
                earlier.append(first)
                continue
            yield from earlier
            earlier.clear()
            if first != last:
                yield first
                last = first
        yield from earlier


def run_name(task: str, tick: dt.datetime, *, with_seconds: bool) -> str:
    """The TaskRun name for one tick: `<task>-<yyyymmddhhmm[ss]>` in UTC. Deterministic, so
    one tick can never produce two runs (the second create is refused as AlreadyExists);
    at most 63 + 15 characters."""
    return (
        f"{task}-{tick.astimezone(UTC).strftime('%Y%m%d%H%M%S' if with_seconds else '%Y%m%d%H%M')}"
    )


@dataclass(frozen=True)
class Decision:
    """What to do about the ticks since the cursor (all ticks at or before it are decided)."""

    #: Start a run for this tick (the latest one due), or None.
    run_at: dt.datetime | None
    #: Due ticks that get no run: all but the latest, or all when the latest is too late.
    missed: int
    #: The earliest of the missed ticks (for the Event).
    first_missed: dt.datetime | None
    #: The latest due tick is older than startingDeadline.
    too_late: bool
    cursor: dt.datetime
    next_at: dt.datetime | None


def decide(
    schedule: CronSchedule,
    cursor: dt.datetime,
    now: dt.datetime,
    starting_deadline: dt.timedelta | None = None,
) -> Decision:
    """Which tick to run now. However many ticks were missed (operator down, a slow pass),
    at most the latest one runs, and only if it is within `starting_deadline` of `now`."""
    latest = schedule.latest_at_or_before(now)
    if latest is None or latest <= cursor:
        return Decision(None, 0, None, False, cursor, schedule.next_after(max(cursor, now)))
    due = 0
    first = None
    for tick in schedule.iter_after(cursor):
        if tick > latest or due >= COUNT_CAP:
            break
        first = first or tick
        due += 1
    next_at = schedule.next_after(now)
    if starting_deadline is not None and now - latest > starting_deadline:
        return Decision(None, due, first, True, latest, next_at)
    return Decision(latest, due - 1, first if due > 1 else None, False, latest, next_at)
