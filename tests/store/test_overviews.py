"""The store behind the command line's and the dashboard's overviews, on real Postgres: the
run history across namespaces and by parent, a run's steps on a timeline (with the runner's
start times, and derived ones from older runners), log filters, and the Task overview —
counts now, outcomes and duration percentiles in a window, cleaned-up runs included. The
queries that scan history use their indexes over 10,000 runs."""

from __future__ import annotations

import datetime as dt
import statistics
import uuid
from typing import Any

from drover.protocol.wire import LogLine, StepRecord
from drover_operator.store import Store
from drover_operator.store.overviews import TASK_SUMMARIES
from drover_operator.store.runviews import RunFilter
from tests.store.conftest import query
from tests.store.test_transitions import POLICY, Runner, add_run, add_task

NOW = dt.datetime.now(dt.UTC)


async def _insert_runs(store: Store, rows: list[tuple[Any, ...]]) -> None:
    """(namespace, name, task, phase, created, started, finished, deleted) per run."""
    async with store.pool.connection() as conn, conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO drover_runs (id, namespace, name, task, phase, created_at, started_at,"
            " finished_at, deleted_at, version, pushed_version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1, 1)",
            [(str(uuid.uuid4()), *row) for row in rows],
        )


async def _plan(store: Store, sql: str, params: Any = None) -> str:
    async with store.pool.connection() as conn:
        await conn.execute("ANALYZE drover_runs")
        cursor = await conn.execute(f"EXPLAIN {sql}", params)
        return "\n".join(str(next(iter(row.values()))) for row in await cursor.fetchall())


def test_the_history_across_namespaces_newest_first_and_by_parent(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await _insert_runs(
            store,
            [
                (ns, f"{ns}-{i}", "t", "Succeeded", NOW - dt.timedelta(seconds=i), None, None, None)
                for i in range(3)
                for ns in ("a", "b")
            ],
        )
        everywhere = await store.runviews.list(RunFilter(None), 100)
        assert [r.name for r in everywhere][:2] in (["a-0", "b-0"], ["b-0", "a-0"])
        assert [r.created_at for r in everywhere] == sorted(
            (r.created_at for r in everywhere), reverse=True
        )
        assert {r.namespace for r in everywhere} == {"a", "b"} and len(everywhere) == 6
        only_b = await store.runviews.list(RunFilter("b"), 100)
        assert {r.namespace for r in only_b} == {"b"}
        # Children by their parent's id.
        [parent] = [r for r in everywhere if r.name == "a-1"]
        async with store.pool.connection() as conn:
            await conn.execute(
                "UPDATE drover_runs SET parent_id = %s WHERE name IN ('a-0', 'a-2')", (parent.id,)
            )
        children = await store.runviews.list(RunFilter("a", parent_id=parent.id), 100)
        assert [r.name for r in children] == ["a-0", "a-2"]

    with_store(scenario)


def test_history_across_namespaces_is_an_index_scan_over_ten_thousand_runs(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> tuple[str, str]:
        await _insert_runs(
            store,
            [
                (
                    f"ns{i % 20}",
                    f"r{i}",
                    "rare" if i % 1000 == 0 else f"t{i % 7}",
                    "Succeeded",
                    NOW - dt.timedelta(seconds=i),
                    None,
                    NOW,
                    None,
                )
                for i in range(10_000)
            ],
        )
        page = "ORDER BY r.created_at DESC, r.id DESC LIMIT 51"
        return (
            await _plan(store, f"SELECT * FROM drover_runs r WHERE true {page}"),
            await _plan(store, f"SELECT * FROM drover_runs r WHERE r.task = 'rare' {page}"),
        )

    everywhere, by_task = with_store(scenario)
    assert "drover_runs_history_all" in everywhere and "Seq Scan" not in everywhere, everywhere
    assert "drover_runs_history_all_by_task" in by_task and "Seq Scan" not in by_task, by_task


def test_the_task_overview_counts_now_and_in_the_window(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, "busy", concurrency={"limit": 3, "perKeyLimit": 1})
        await add_task(store, "idle")
        # Now: one holding a slot (admitted), one queued.
        running = await add_run(store, "running", task="busy")
        await add_run(store, "queued", task="busy", created_at=NOW + dt.timedelta(seconds=1))
        await store.admission.admit("ns", "busy", POLICY)
        assert (await query(store, "SELECT phase FROM drover_runs WHERE id = %s", running))[0][
            "phase"
        ] == "Starting"
        await store.admission.admit("ns", "busy", POLICY)
        # In the window: 10 succeeded taking 1..10 s (one of them cleaned up), 2 failed, one
        # canceled; and a success from two days ago that must not count.
        finished = [
            (
                "ns",
                f"ok{i}",
                "busy",
                "Succeeded",
                NOW - dt.timedelta(hours=1),
                NOW - dt.timedelta(hours=1),
                NOW - dt.timedelta(hours=1) + dt.timedelta(seconds=i),
                NOW if i == 1 else None,
            )
            for i in range(1, 11)
        ]
        finished += [
            ("ns", f"bad{i}", "busy", phase, NOW, NOW, NOW, None)
            for i, phase in enumerate(("Failed", "TimedOut", "Canceled"))
        ]
        old = NOW - dt.timedelta(days=2)
        finished.append(("ns", "old", "busy", "Succeeded", old, old, old, None))
        await _insert_runs(store, finished)
        async with store.pool.connection() as conn:
            await conn.execute("UPDATE drover_runs SET phase = 'Waiting' WHERE name = 'queued'")
        summaries = await store.overviews.tasks("ns", NOW - dt.timedelta(hours=24))
        by_name = {s.name: s for s in summaries}
        assert set(by_name) == {"busy", "idle"}
        busy = by_name["busy"]
        assert (busy.running, busy.queued, busy.waiting) == (1, 0, 1)
        assert (busy.succeeded, busy.failed, busy.canceled) == (10, 2, 1)
        durations = list(range(1, 11))
        assert busy.p50_seconds is not None and busy.p95_seconds is not None
        assert abs(busy.p50_seconds - statistics.median(durations)) < 0.01
        assert abs(busy.p95_seconds - 9.55) < 0.01  # linear interpolation, as percentile_cont
        assert busy.spec["concurrency"] == {"limit": 3, "perKeyLimit": 1}
        idle = by_name["idle"]
        assert (idle.running, idle.succeeded, idle.p50_seconds) == (0, 0, None)
        assert await store.overviews.tasks("elsewhere", NOW) == []
        assert {s.name for s in await store.overviews.tasks(None, NOW)} == {"busy", "idle"}

    with_store(scenario)


def test_the_task_overview_reads_indexes_over_ten_thousand_runs(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> str:
        for task in ("a", "b"):
            await add_task(store, task)
        await _insert_runs(
            store,
            [
                (
                    "ns",
                    f"r{i}",
                    "ab"[i % 2],
                    "Succeeded",
                    NOW - dt.timedelta(minutes=i),
                    NOW - dt.timedelta(minutes=i),
                    NOW - dt.timedelta(minutes=i),
                    None,
                )
                for i in range(10_000)
            ],
        )
        params = {"namespace": "ns", "since": NOW - dt.timedelta(hours=24)}
        return await _plan(store, TASK_SUMMARIES, params)

    plan = with_store(scenario)
    assert "drover_runs_finished_recent" in plan and "drover_runs_by_task" in plan, plan
    assert "Seq Scan on drover_runs" not in plan, plan


def test_steps_on_the_timeline_and_log_filters(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store)
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        pod_started = NOW
        await store.attempts.running(run_id, 1, pod_started)
        began = NOW + dt.timedelta(seconds=2)
        # A runner of protocol 2 says when a step began; an older one does not.
        await store.runapi.put_steps(
            run_id, 1, [StepRecord(seq=0, name="fetch", value=1, started_at=began)]
        )
        await store.runapi.put_steps(run_id, 1, [StepRecord(seq=1, name="push", value=2)])
        steps = await store.overviews.steps(run_id)
        assert [(s.seq, s.name, s.attempt) for s in steps] == [(0, "fetch", 1), (1, "push", 1)]
        assert steps[0].started_at == began
        assert steps[1].started_at == steps[0].finished_at  # the previous checkpoint
        for step in steps:
            assert (
                step.started_at is not None
                and step.finished_at >= step.started_at - dt.timedelta(seconds=5)
            )
        lines = [
            LogLine(time=NOW + dt.timedelta(seconds=s), level="INFO", message=f"line {s}")
            for s in range(5)
        ]
        await store.runapi.append_logs(run_id, 1, lines)
        every = await store.runapi.logs(run_id, 0, 100)
        assert [ln.message for ln in every] == [f"line {s}" for s in range(5)]
        assert {(ln.attempt, ln.execution) for ln in every} == {(1, 1)}
        recent = await store.runapi.logs(run_id, 0, 100, since=NOW + dt.timedelta(seconds=3))
        assert [ln.message for ln in recent] == ["line 3", "line 4"]
        assert await store.runapi.logs(run_id, 0, 100, attempt=2) == []
        after = await store.runapi.logs(run_id, every[1].id, 2)
        assert [ln.message for ln in after] == ["line 2", "line 3"]

    with_store(scenario)
