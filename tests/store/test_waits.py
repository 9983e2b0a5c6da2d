"""Durable waits in the store, on real Postgres: suspending frees the slot in the same
transaction, waits resolve once and are replayed, resumed executions keep their attempt,
tokens complete once, and canceling a waiting parent cancels its children."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from drover_operator.domain.attempts import AttemptState, Outcome
from drover_operator.domain.waits import WaitKind, batch_step
from drover_operator.store import Store
from drover_operator.store.waits import WaitError
from tests.store.conftest import query
from tests.store.test_transitions import (
    POLICY,
    Runner,
    active_slots,
    add_run,
    add_task,
    reasons,
    run_row,
)

LONG = dt.timedelta(seconds=10)


async def _set(store: Store, sql: str, *params: Any) -> None:
    async with store.pool.connection() as conn:
        await conn.execute(sql, params)


async def _running(store: Store, name: str, **fields: Any) -> str:
    run_id = await add_run(store, name, **fields)
    await store.admission.admit("ns", "t", POLICY)
    return run_id


def test_a_long_wait_suspends_the_run_and_frees_its_slot_in_one_transaction(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i", concurrency={"limit": 1})
        waiter = await _running(store, "waiter")
        queued = await add_run(store, "queued")
        assert await store.admission.admit("ns", "t", POLICY) == []  # the slot is taken
        waited = await store.waits.wait(
            waiter, 1, 0, WaitKind.DURATION, seconds=3600, suspend_after=LONG
        )
        assert waited.state == "suspended"
        [execution] = await query(store, "SELECT * FROM drover_attempts WHERE run_id = %s", waiter)
        assert (execution["state"], execution["active"], execution["kill_requested"]) == (
            AttemptState.SUSPENDED,
            False,
            True,
        )
        row = await run_row(store, waiter)
        assert row["phase"] == "Waiting" and row["waiting_for"]["kind"] == "Duration"
        assert row["attempt"] == 1
        assert await active_slots(store) == 0
        # The freed slot goes to the next run at once.
        [admitted] = await store.admission.admit("ns", "t", POLICY)
        assert admitted.run_id == queued
        assert "Suspended" in await reasons(store, waiter)
        # The suspended execution's later calls change nothing.
        with pytest.raises(WaitError) as refused:
            await store.waits.wait(waiter, 1, 0, WaitKind.DURATION, seconds=1, suspend_after=LONG)
        assert refused.value.type == "attempt-inactive"

    with_store(scenario)


def test_a_short_wait_sleeps_in_the_pod_and_its_timer_never_restarts(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i")
        run_id = await _running(store, "r")
        first = await store.waits.wait(
            run_id, 1, 3, WaitKind.DURATION, seconds=5, suspend_after=LONG
        )
        assert first.state == "sleep" and first.sleep_seconds is not None
        assert 4 < first.sleep_seconds <= 5
        # Asked again (a retry would too): the wake time is the one recorded first.
        [point] = await query(
            store, "SELECT wake_at FROM drover_waitpoints WHERE run_id = %s", run_id
        )
        again = await store.waits.wait(
            run_id, 1, 3, WaitKind.DURATION, seconds=5000, suspend_after=LONG
        )
        assert again.state == "sleep"
        [same] = await query(
            store, "SELECT wake_at FROM drover_waitpoints WHERE run_id = %s", run_id
        )
        assert same["wake_at"] == point["wake_at"]
        await _set(store, "UPDATE drover_waitpoints SET wake_at = now() WHERE run_id = %s", run_id)
        over = await store.waits.wait(
            run_id, 1, 3, WaitKind.DURATION, seconds=5, suspend_after=LONG
        )
        assert over.state == "resolved"
        [step] = await query(store, "SELECT * FROM drover_steps WHERE run_id = %s", run_id)
        assert (step["seq"], step["name"]) == (3, "wait:duration")
        # A different call at a recorded position is non-determinism.
        with pytest.raises(WaitError) as refused:
            await store.waits.wait(run_id, 1, 3, WaitKind.TOKEN, token_id=None, suspend_after=LONG)
        assert refused.value.type == "non-determinism"

    with_store(scenario)


def test_a_resumed_run_is_queued_then_admitted_in_a_new_execution_of_the_same_attempt(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i", timeouts={"maxDuration": "100s"})
        run_id = await _running(store, "r")
        # It ran 30 s before it suspended: 70 s of maxDuration are left.
        await _set(
            store,
            "UPDATE drover_attempts SET started_at = now() - interval '30 seconds'"
            " WHERE run_id = %s",
            run_id,
        )
        await store.waits.wait(run_id, 1, 0, WaitKind.DURATION, seconds=60, suspend_after=LONG)
        assert await store.waits.resolve_due(10) == []
        left = await store.waits.seconds_to_next()
        assert left is not None and 55 < left <= 60
        await _set(store, "UPDATE drover_waitpoints SET wake_at = now() WHERE run_id = %s", run_id)
        [resumed] = await store.waits.resolve_due(10)
        assert (resumed.run_id, resumed.kind, resumed.seq) == (run_id, "Duration", 0)
        assert resumed.due_at is not None
        row = await run_row(store, run_id)
        assert (row["phase"], row["resume"], row["waiting_for"]) == ("Queued", True, None)
        [admitted] = await store.admission.admit("ns", "t", POLICY)
        assert (admitted.number, admitted.pod_name) == (2, "r-a1-r2")
        [execution] = await query(
            store, "SELECT * FROM drover_attempts WHERE run_id = %s AND number = 2", run_id
        )
        assert execution["try_number"] == 1
        assert dt.timedelta(seconds=69) <= execution["max_duration"] <= dt.timedelta(seconds=71)
        row = await run_row(store, run_id)
        assert (row["attempt"], row["execution"], row["resume"]) == (1, 2, False)
        # The new execution replays the wait: its result is recorded.
        replay = await store.waits.wait(
            run_id, 2, 0, WaitKind.DURATION, seconds=60, suspend_after=LONG
        )
        assert replay.state == "resolved"
        assert "Resumed" in await reasons(store, run_id)

    with_store(scenario)


def test_a_parent_waiting_on_children_resumes_when_all_finish_with_their_results_in_order(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i")
        parent = await _running(store, "parent")
        children = [
            await add_run(store, f"child-{i}", parent_id=parent, parent_name="parent")
            for i in range(3)
        ]
        assert (await run_row(store, parent))["child_count"] == 3
        assert await store.runs.child_names(parent, 10) == ["child-0", "child-1", "child-2"]
        waited = await store.waits.wait(
            parent, 1, 1, WaitKind.RUNS, runs=list(reversed(children)), suspend_after=LONG
        )
        assert waited.state == "suspended"
        assert (await run_row(store, parent))["waiting_for"]["runs"] == [
            "child-2",
            "child-1",
            "child-0",
        ]
        await store.admission.admit("ns", "t", POLICY)
        for number, child in enumerate(children):
            done = Outcome(AttemptState.SUCCEEDED, "Completed", "ok", False, 0, {"i": number})
            assert await store.attempts.finish(child, 1, done, POLICY.end) is not None
            if number < 2:
                assert await store.waits.resolve_due(10) == []  # not all finished yet
        [resumed] = await store.waits.resolve_due(10)
        assert resumed.run_id == parent
        [step] = await query(store, "SELECT * FROM drover_steps WHERE run_id = %s", parent)
        assert [r["name"] for r in step["value"]] == ["child-2", "child-1", "child-0"]
        assert [r["output"] for r in step["value"]] == [{"i": 2}, {"i": 1}, {"i": 0}]
        assert {r["phase"] for r in step["value"]} == {"Succeeded"}

    with_store(scenario)


def test_a_parent_waiting_on_a_child_not_yet_recorded_names_it_in_waiting_for(
    with_store: Runner[Any],
) -> None:
    """The operator records a child when its TaskRun's event arrives, which may be after the
    parent suspends on it: `waitingFor.runs` still names it (from the recorded trigger call),
    never by its UID, and the wait is over only once it is recorded and finished."""

    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i")
        parent = await _running(store, "parent")
        unrecorded = str(uuid.uuid4())
        started = [{"name": "napper-0a1b2c3d4e", "id": unrecorded, "task": "napper"}]
        await store.waits.record(parent, 1, 0, batch_step("napper"), started)
        waited = await store.waits.wait(
            parent, 1, 1, WaitKind.RUNS, runs=[unrecorded], suspend_after=LONG
        )
        assert waited.state == "suspended"
        row = await run_row(store, parent)
        assert row["waiting_for"]["runs"] == ["napper-0a1b2c3d4e"]
        assert "napper-0a1b2c3d4e" in row["message"]
        assert await store.waits.resolve_due(10) == []

    with_store(scenario)


def test_tokens_complete_once_and_time_out(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i")
        run_id = await _running(store, "r")
        token = await store.tokens.create(
            run_id, "ns", 0, dt.timedelta(hours=1), idempotency_key=None, tags=["a"]
        )
        again = await store.tokens.create(
            run_id, "ns", 0, dt.timedelta(hours=9), idempotency_key=None, tags=None
        )
        assert again.id == token.id and again.timeout_at == token.timeout_at
        waited = await store.waits.wait(
            run_id, 1, 1, WaitKind.TOKEN, token_id=token.id, suspend_after=LONG
        )
        assert waited.state == "suspended"
        [listed] = await store.tokens.list("ns", state=None)
        assert listed.id == token.id and listed.state == "waiting" and listed.run == "r"
        first, won = await store.tokens.complete(token.id, {"approved": True})
        second, won_again = await store.tokens.complete(token.id, {"approved": False})
        assert won and not won_again
        assert first is not None and second is not None and second.data == {"approved": True}
        [resumed] = await store.waits.resolve_due(10)
        assert resumed.kind == "Token"
        [step] = await query(store, "SELECT * FROM drover_steps WHERE run_id = %s", run_id)
        assert step["value"]["ok"] is True and step["value"]["data"] == {"approved": True}

        # A second token, never completed: it times out and resumes its waiter.
        await store.admission.admit("ns", "t", POLICY)
        late = await store.tokens.create(
            run_id, "ns", 2, dt.timedelta(hours=1), idempotency_key="k", tags=None
        )
        await store.waits.wait(run_id, 2, 2, WaitKind.TOKEN, token_id=late.id, suspend_after=LONG)
        await _set(store, "UPDATE drover_tokens SET timeout_at = now() WHERE id = %s", late.id)
        [timed_out] = await store.waits.resolve_due(10)
        assert timed_out.seq == 2
        value = await store.waits.recorded(run_id, 2)
        assert value is not None and value.value["timedOut"] is True and not value.value["ok"]
        _, late_won = await store.tokens.complete(late.id, {"too": "late"})
        assert not late_won
        # The same idempotency key in the namespace is the same token.
        keyed = await store.tokens.create(
            run_id, "ns", 9, dt.timedelta(hours=1), idempotency_key="k", tags=None
        )
        assert keyed.id == late.id

    with_store(scenario)


def test_canceling_a_waiting_parent_cancels_its_unfinished_descendants(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", image="i")
        parent = await _running(store, "parent")
        done = await add_run(store, "done", parent_id=parent, parent_name="parent")
        running = await add_run(store, "running", parent_id=parent, parent_name="parent")
        grandchild = await add_run(store, "grandchild", parent_id=running, parent_name="running")
        token = await store.tokens.create(
            parent, "ns", 0, dt.timedelta(hours=1), idempotency_key=None, tags=None
        )
        await store.waits.wait(
            parent, 1, 1, WaitKind.RUNS, runs=[done, running], suspend_after=LONG
        )
        await store.admission.admit("ns", "t", POLICY)
        ok = Outcome(AttemptState.SUCCEEDED, "Completed", "ok", False, 0, None)
        await store.attempts.finish(done, 1, ok, POLICY.end)
        closed = await store.runs.close(parent, reason="Canceled", message="m", deleted=False)
        assert closed is not None
        phases = {
            r["name"]: (r["phase"], r["reason"])
            for r in await query(store, "SELECT name, phase, reason FROM drover_runs")
        }
        assert phases == {
            "parent": ("Canceled", "Canceled"),
            "done": ("Succeeded", "Completed"),
            "running": ("Canceled", "ParentCanceled"),
            "grandchild": ("Canceled", "ParentCanceled"),
        }
        # The running child's pod is stopped; nothing of the parent resumes.
        stopping = {s.pod_name for s in await store.attempts.pods_to_stop(10)}
        assert "running-a1" in stopping
        assert await active_slots(store) == 0
        assert await store.waits.resolve_due(10) == []
        [point] = await query(
            store, "SELECT state FROM drover_waitpoints WHERE run_id = %s", parent
        )
        assert point["state"] == "canceled"
        assert (await store.tokens.get(token.id)).state == "canceled"  # type: ignore[union-attr]
        assert grandchild

    with_store(scenario)
