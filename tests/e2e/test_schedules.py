"""Schedules on a real cluster: runs on time with deterministic names, concurrencyPolicy
Forbid and Replace, suspend, invalid schedules reported, and at most one catch-up run after
the operator was down. Schedules use a seconds field, so no test waits for a minute."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg
import pytest
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from drover.protocol.names import ANNOTATION_SCHEDULED_TIME, LABEL_RUN, LABEL_SCHEDULE
from drover_operator.kube import TaskResource, TaskRunResource
from tests.conftest import E2ECluster, wait_for
from tests.e2e.operator_support import (
    OperatorProcess,
    parse_time,
    run,
    status_of,
    task,
    wait_phase,
)
from tests.e2e.podwatch import watching

pytestmark = pytest.mark.e2e

QUICK = {"image": "busybox", "command": ["true"]}
SLOW = {"image": "busybox", "command": ["sleep", "600"]}


def scheduled_runs(
    cluster: E2ECluster, namespace: str, name: str
) -> list[GenericNamespacedResource]:
    """The Task's scheduled TaskRuns, oldest tick first."""
    items = list(
        cluster.client.list(TaskRunResource, namespace=namespace, labels={LABEL_SCHEDULE: name})
    )
    return sorted(items, key=tick_of)


def tick_of(item: GenericNamespacedResource) -> dt.datetime:
    assert item.metadata is not None and item.metadata.annotations is not None
    return parse_time(item.metadata.annotations[ANNOTATION_SCHEDULED_TIME])


def name_of(item: GenericNamespacedResource) -> str:
    assert item.metadata is not None and item.metadata.name is not None
    return item.metadata.name


def at_least(cluster: E2ECluster, namespace: str, name: str, count: int) -> list[Any]:
    def enough() -> list[Any] | None:
        items = scheduled_runs(cluster, namespace, name)
        return items if len(items) >= count else None

    return wait_for(enough, timeout=120, interval=0.2, what=f"{count} scheduled runs of {name}")


def task_status(cluster: E2ECluster, namespace: str, name: str) -> dict[str, Any]:
    return status_of(cluster.client.get(TaskResource, name, namespace=namespace))


def task_events(cluster: E2ECluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    events = cluster.client.list(
        Event,
        namespace=namespace,
        fields={"involvedObject.kind": "Task", "involvedObject.name": name},
    )
    return [(e.type or "", e.reason or "", e.message or "") for e in events]


def wait_event(
    cluster: E2ECluster, namespace: str, name: str, reason: str, *containing: str
) -> str:
    """The message of an Event of this reason on the Task that contains all of `containing`."""

    def posted() -> str | None:
        for _, r, message in task_events(cluster, namespace, name):
            if r == reason and all(part in message for part in containing):
                return message
        return None

    return wait_for(posted, timeout=120, what=f"{reason} event on Task {name}")


def patch_schedule(cluster: E2ECluster, namespace: str, name: str, **fields: Any) -> None:
    cluster.client.patch(
        TaskResource,
        name,
        {"spec": {"schedule": fields}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


def test_a_schedule_creates_named_runs_on_its_ticks(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    schedule = {"cron": "*/2 * * * * *", "timezone": "Europe/Berlin", "payload": {"report": 7}}
    task(cluster.client, namespace, "tick", {**QUICK, "schedule": schedule})
    first, second = at_least(cluster, namespace, "tick", 2)[:2]
    task_uid = cluster.client.get(TaskResource, "tick", namespace=namespace).metadata.uid  # type: ignore[union-attr]
    for item in (first, second):
        tick = tick_of(item)
        assert tick.second % 2 == 0 and tick.microsecond == 0
        assert name_of(item) == f"tick-{tick:%Y%m%d%H%M%S}"
        assert item.spec is not None and item.spec["payload"] == {"report": 7}
        meta = item.metadata
        assert meta is not None and meta.creationTimestamp is not None
        assert meta.creationTimestamp >= tick  # never early
        [owner] = meta.ownerReferences or []
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "Task",
            "tick",
            task_uid,
            True,
        )
    assert tick_of(second) > tick_of(first)
    wait_phase(cluster.client, namespace, name_of(first), "Succeeded")

    def status_agrees() -> dict[str, Any] | None:
        newest = tick_of(scheduled_runs(cluster, namespace, "tick")[-1])
        st = task_status(cluster, namespace, "tick")
        last, upcoming = st.get("lastScheduleTime"), st.get("nextScheduleTime")
        if not last or not upcoming or parse_time(last) != newest:
            return None
        return st

    st = wait_for(status_agrees, what="lastScheduleTime of the newest run")
    assert parse_time(st["nextScheduleTime"]) > parse_time(st["lastScheduleTime"])
    assert parse_time(st["nextScheduleTime"]).second % 2 == 0
    patch_schedule(cluster, namespace, "tick", suspend=True)
    wait_for(
        lambda: "nextScheduleTime" not in task_status(cluster, namespace, "tick"),
        what="no next schedule time while suspended",
    )


def test_forbid_skips_ticks_while_a_run_is_unfinished(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    schedule = {"cron": "* * * * * *", "concurrencyPolicy": "Forbid"}
    task(cluster.client, namespace, "solo", {**SLOW, "schedule": schedule})
    [first] = at_least(cluster, namespace, "solo", 1)[:1]
    wait_phase(cluster.client, namespace, name_of(first), "Running")

    def skipped_twice() -> bool:
        events = task_events(cluster, namespace, "solo")
        return sum(r == "ScheduleSkipped" for _, r, _ in events) >= 2

    wait_for(skipped_twice, timeout=120, what="two skipped ticks")
    assert [name_of(r) for r in scheduled_runs(cluster, namespace, "solo")] == [name_of(first)]
    wait_event(cluster, namespace, "solo", "ScheduleSkipped", name_of(first), "Forbid")
    # Once the run is over, the next tick starts a new one.
    cluster.client.patch(
        TaskRunResource,
        name_of(first),
        {"spec": {"cancel": True}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    wait_phase(cluster.client, namespace, name_of(first), "Canceled")
    later = at_least(cluster, namespace, "solo", 2)
    assert tick_of(later[1]) > tick_of(first)
    patch_schedule(cluster, namespace, "solo", suspend=True)


def test_replace_cancels_the_unfinished_run(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    schedule = {"cron": "*/3 * * * * *", "concurrencyPolicy": "Replace"}
    c = cluster.client
    with watching(cluster, namespace) as watch:
        task(c, namespace, "fresh", {**SLOW, "schedule": schedule})
        first, second = at_least(cluster, namespace, "fresh", 2)[:2]
        replaced = wait_phase(c, namespace, name_of(first), "Canceled")
        assert replaced["conditions"][0]["reason"] == "Canceled"
        patch_schedule(cluster, namespace, "fresh", suspend=True)
        wait_event(cluster, namespace, "fresh", "ScheduleReplaced", name_of(first), name_of(second))
        # The replacement runs: the newest tick's run (no tick replaces it once suspended)
        # reaches Running with a live pod, and every earlier run was canceled.
        *older, newest = scheduled_runs(cluster, namespace, "fresh")
        wait_phase(c, namespace, name_of(newest), "Running")
        wait_for(lambda: watch.live(**{LABEL_RUN: name_of(newest)}), what="the replacement's pod")
        for item in older:
            assert wait_phase(c, namespace, name_of(item), "Canceled")["phase"] == "Canceled"
        older_names = {name_of(item) for item in older}
        wait_for(
            lambda: not [p for p in watch.live() if p.labels.get(LABEL_RUN) in older_names],
            what="the replaced runs' pods gone",
        )
        assert watch.live(**{LABEL_RUN: name_of(newest)})  # still running


def test_suspend_pauses_without_catching_up(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(c, namespace, "paused", {**QUICK, "schedule": {"cron": "*/4 * * * * *", "suspend": True}})
    task(c, namespace, "going", {**QUICK, "schedule": {"cron": "* * * * * *"}})
    at_least(cluster, namespace, "going", 6)  # more than a tick of "paused" has passed
    assert scheduled_runs(cluster, namespace, "paused") == []
    assert "nextScheduleTime" not in task_status(cluster, namespace, "paused")
    patch_schedule(cluster, namespace, "going", suspend=True)
    resumed = dt.datetime.now(dt.UTC)
    patch_schedule(cluster, namespace, "paused", suspend=False)
    [first] = at_least(cluster, namespace, "paused", 1)[:1]
    # Ticks while suspended are not caught up: the first run is for a tick after resuming.
    assert tick_of(first) > resumed
    assert tick_of(first).second % 4 == 0


def test_invalid_timezone_and_cron_are_reported_and_create_no_runs(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    bad_zone = {"cron": "* * * * * *", "timezone": "Mars/Olympus"}
    task(c, namespace, "bad-zone", {**QUICK, "schedule": bad_zone})
    task(c, namespace, "bad-cron", {**QUICK, "schedule": {"cron": "61 * * * *"}})
    task(c, namespace, "fine", {**QUICK, "schedule": {"cron": "* * * * * *"}})
    # Not Ready for another reason: no run could start, so none is queued per tick either.
    blocked = {"schedule": {"cron": "* * * * * *"}, "payloadSchema": {"type": "nonsense"}}
    task(c, namespace, "blocked", {**QUICK, **blocked})

    def ready(name: str, reason: str) -> dict[str, Any] | None:
        for condition in task_status(cluster, namespace, name).get("conditions") or []:
            if condition["type"] == "Ready" and condition["reason"] == reason:
                return dict(condition)
        return None

    zone = wait_for(lambda: ready("bad-zone", "InvalidTimezone"), what="InvalidTimezone")
    assert zone["status"] == "False" and "'Mars/Olympus'" in zone["message"]
    cron = wait_for(lambda: ready("bad-cron", "InvalidSchedule"), what="InvalidSchedule")
    assert cron["status"] == "False" and "'61 * * * *'" in cron["message"]
    assert "Mars/Olympus" in wait_event(cluster, namespace, "bad-zone", "InvalidTimezone")
    assert "61 * * * *" in wait_event(cluster, namespace, "bad-cron", "InvalidSchedule")
    assert ("Warning", "InvalidTimezone") in {
        (t, r) for t, r, _ in task_events(cluster, namespace, "bad-zone")
    }
    at_least(cluster, namespace, "fine", 3)
    assert scheduled_runs(cluster, namespace, "bad-zone") == []
    assert scheduled_runs(cluster, namespace, "bad-cron") == []
    assert scheduled_runs(cluster, namespace, "blocked") == []
    patch_schedule(cluster, namespace, "fine", suspend=True)
    # A bad schedule stops only the schedule: a run created directly still runs.
    run(c, namespace, "by-hand", "bad-zone")
    assert wait_phase(c, namespace, "by-hand", "Succeeded")["phase"] == "Succeeded"
    # Fixed, the Task becomes Ready and the schedule starts.
    patch_schedule(cluster, namespace, "bad-zone", timezone="Europe/Berlin")
    wait_for(lambda: ready("bad-zone", "Valid"), what="Ready again")
    at_least(cluster, namespace, "bad-zone", 1)


def test_missed_ticks_after_downtime_make_at_most_one_run(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    task(c, namespace, "often", {**QUICK, "schedule": {"cron": "*/2 * * * * *"}})
    at_least(cluster, namespace, "often", 1)
    # Two Tasks whose only tick falls while the operator is down.
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).replace(microsecond=0)
    once = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
    task(c, namespace, "lenient", {**QUICK, "schedule": {"cron": once, "startingDeadline": "1h"}})
    task(c, namespace, "strict", {**QUICK, "schedule": {"cron": once, "startingDeadline": "1s"}})
    operator.kill()
    down = dt.datetime.now(dt.UTC)
    assert down < due, "the test was too slow to stop the operator before the tick"
    time.sleep(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds()) + 5)  # downtime
    back = dt.datetime.now(dt.UTC)
    operator.start()

    # startingDeadline 1h: the missed tick runs once, late.
    [caught_up] = at_least(cluster, namespace, "lenient", 1)
    assert tick_of(caught_up) == due
    # startingDeadline 1s: too late, no run, and an Event says why.
    wait_event(cluster, namespace, "strict", "MissedSchedule", "startingDeadline", "no run")
    assert scheduled_runs(cluster, namespace, "strict") == []

    # Every 2s: the downtime's ticks (three or more) give one run, not a flood.
    def many_missed() -> bool:
        return any(
            r == "MissedSchedule"
            and "one run for the latest only" in m
            and int(m.split()[0].rstrip("+")) >= 2
            for _, r, m in task_events(cluster, namespace, "often")
        )

    wait_for(many_missed, what="a MissedSchedule event for the downtime")

    def resumed() -> list[GenericNamespacedResource] | None:
        items = scheduled_runs(cluster, namespace, "often")
        return items if tick_of(items[-1]) > back + dt.timedelta(seconds=2) else None

    after = wait_for(resumed, timeout=120, what="regular ticks after the restart")
    during = [tick_of(r) for r in after if down < tick_of(r) <= back]
    assert len(during) <= 1, during
    patch_schedule(cluster, namespace, "often", suspend=True)
    assert [name_of(r) for r in scheduled_runs(cluster, namespace, "lenient")] == [
        name_of(caught_up)
    ]


def test_two_operators_decide_each_tick_once(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    # Both standalone, both active: the per-Task lock in Postgres and deterministic names
    # keep one decision, one record and one TaskRun per tick.
    second = OperatorProcess(
        cluster, namespace, operator.dsn, operator.log.with_name(operator.log.stem + "-second.log")
    ).start()
    try:
        task(cluster.client, namespace, "twice", {**QUICK, "schedule": {"cron": "* * * * * *"}})
        at_least(cluster, namespace, "twice", 5)
        patch_schedule(cluster, namespace, "twice", suspend=True)
    finally:
        second.stop()
    runs = [name_of(r) for r in scheduled_runs(cluster, namespace, "twice")]

    def all_posted() -> list[str] | None:
        events = task_events(cluster, namespace, "twice")
        created = [m.split()[2] for _, r, m in events if r == "Scheduled"]
        return created if set(created) >= set(runs) else None

    created = wait_for(all_posted, what="a Scheduled event per run")
    assert sorted(created) == sorted(set(created))  # each tick decided once
    with psycopg.connect(operator.dsn) as conn:
        rows = conn.execute(
            "SELECT name, scheduled_at FROM drover_schedule_runs WHERE task = 'twice'"
        ).fetchall()
    assert len({at for _, at in rows}) == len(rows) and {n for n, _ in rows} >= set(runs)
