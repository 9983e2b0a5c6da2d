"""Every transition of a run's state machine, one test each, on real Postgres: record, admit,
start, finish, retry, cancel, expire, stall. Each is driven through the store's API (with the
lifecycle's rules, as the operator runs it) and checked by reading the tables directly."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from drover_operator.domain import attempts
from drover_operator.domain.attempts import AttemptState, Outcome
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.store import Store
from drover_operator.store.runs import NewRun
from tests.store.conftest import query

T = TypeVar("T")
Runner = Callable[[Callable[[Store], Awaitable[T]]], T]

POLICY = LifecyclePolicy(dt.timedelta(minutes=10), signing_key=b"k" * 32)
NOW = dt.datetime.now(dt.UTC)


async def add_task(store: Store, name: str = "t", **spec: Any) -> None:
    body = {"image": "busybox", **({} if "entrypoint" in spec else {"command": ["true"]}), **spec}
    await store.tasks.upsert("ns", name, str(uuid.uuid4()), 1, body, None)


async def add_run(store: Store, name: str, task: str = "t", **fields: Any) -> str:
    run_id = str(uuid.uuid4())
    fields.setdefault("created_at", NOW)
    await store.runs.record(
        NewRun(id=run_id, namespace="ns", name=name, task=task, generation=1, **fields)
    )
    return run_id


async def run_row(store: Store, run_id: str) -> dict[str, Any]:
    [row] = await query(store, "SELECT * FROM drover_runs WHERE id = %s", run_id)
    return row


async def active_slots(store: Store) -> int:
    rows = await query(store, "SELECT count(*) AS n FROM drover_attempts WHERE active")
    return int(rows[0]["n"])


async def reasons(store: Store, run_id: str) -> list[str]:
    rows = await query(
        store, "SELECT reason FROM drover_run_events WHERE run_id = %s ORDER BY id", run_id
    )
    return [r["reason"] for r in rows]


def failure(retryable: bool = True) -> Outcome:
    return Outcome(AttemptState.FAILED, "Error", "exit code 1", retryable, exit_code=1)


def test_record_is_once_per_uid(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store)
        new = NewRun(id=str(uuid.uuid4()), namespace="ns", name="r", task="t", generation=1,
                     created_at=NOW, payload={"k": 1})  # fmt: skip
        assert await store.runs.record(new)
        assert not await store.runs.record(new)  # a replayed event: nothing twice
        row = await run_row(store, new.id)
        assert (row["phase"], row["payload"], row["attempt"]) == ("Queued", {"k": 1}, 0)
        assert await reasons(store, new.id) == ["Queued"]
        refused = await add_run(store, "bad", failed=("InvalidPayload", "payload.n: bad"))
        row = await run_row(store, refused)
        assert row["phase"] == "Failed" and row["error"]["retryable"] is False
        assert row["finished_at"] is not None and await reasons(store, refused) == [
            "InvalidPayload"
        ]

    with_store(scenario)


def test_admit_takes_free_slots_by_priority_then_age_and_per_key(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 3, "perKeyLimit": 1})
        old = await add_run(store, "old", concurrency_key="a")
        same_key = await add_run(store, "same-key", concurrency_key="a",
                                 created_at=NOW + dt.timedelta(seconds=1))  # fmt: skip
        urgent = await add_run(store, "urgent", priority=10,
                               created_at=NOW + dt.timedelta(seconds=2))  # fmt: skip
        later = [await add_run(store, f"later-{i}", created_at=NOW + dt.timedelta(seconds=3 + i))
                 for i in range(3)]  # fmt: skip
        admitted = await store.admission.admit("ns", "t", POLICY)
        assert [a.run_id for a in admitted] == [urgent, old, later[0]]
        assert await active_slots(store) == 3
        row = await run_row(store, old)
        assert (row["phase"], row["attempt"]) == ("Starting", 1)
        assert (await run_row(store, same_key))["phase"] == "Queued"  # key a is full
        [attempt] = await query(store, "SELECT * FROM drover_attempts WHERE run_id = %s", old)
        assert attempt["state"] == "Admitted" and attempt["pod_name"] == "old-a1"
        assert attempt["token_hash"] and attempt["pending_deadline_at"] is not None
        assert await store.admission.admit("ns", "t", POLICY) == []  # no slot left
        assert "Admitted" in await reasons(store, old)

    with_store(scenario)


def test_a_run_recorded_canceling_is_never_admitted(with_store: Runner[Any]) -> None:
    """A TaskRun created with spec.cancel: the close that follows its recording could come
    after an admission pass (found by bench_scale: such runs Succeeded); recorded as
    canceling, it is never a candidate, and the close then ends it Canceled."""

    async def scenario(store: Store) -> None:
        await add_task(store)
        canceling = await add_run(store, "canceling", cancel_requested=True)
        plain = await add_run(store, "plain", created_at=NOW + dt.timedelta(seconds=1))
        admitted = await store.admission.admit("ns", "t", POLICY)
        assert [a.run_id for a in admitted] == [plain]
        assert (await run_row(store, canceling))["phase"] == "Queued"
        closed = await store.runs.close(
            canceling, reason="Canceled", message="spec.cancel is true", deleted=False
        )
        assert closed is not None and closed.attempt is None
        assert (await run_row(store, canceling))["phase"] == "Canceled"

    with_store(scenario)


def test_known_runs_are_those_whose_taskrun_exists_newest_first(
    with_store: Runner[Any],
) -> None:
    """What a starting operator remembers, so that replaying the TaskRuns of its first
    listing asks the store nothing: every recorded run (newest first, up to a limit), and
    whether it is over; runs whose TaskRun is gone are left out."""

    async def scenario(store: Store) -> None:
        await add_task(store)
        ids = [
            await add_run(store, f"r{i}", created_at=NOW + dt.timedelta(seconds=i))
            for i in range(4)
        ]
        await store.runs.close(ids[1], reason="Canceled", message="m", deleted=False)
        await store.runs.close(ids[2], reason="Deleted", message="m", deleted=True)
        known = await store.runs.known(10)
        assert [(k.id, k.finished) for k in known] == [
            (ids[3], False),
            (ids[1], True),
            (ids[0], False),
        ]
        assert [k.id for k in await store.runs.known(1)] == [ids[3]]

    with_store(scenario)


def test_start_marks_the_attempt_running_with_its_deadline(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, timeouts={"maxDuration": "90s"})
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        started = dt.datetime.now(dt.UTC)
        assert await store.attempts.running(run_id, 1, started)
        assert not await store.attempts.running(run_id, 1, started)  # once
        [attempt] = await query(store, "SELECT * FROM drover_attempts WHERE run_id = %s", run_id)
        assert attempt["state"] == "Running"
        assert attempt["deadline_at"] - attempt["started_at"] == dt.timedelta(seconds=90)
        row = await run_row(store, run_id)
        assert row["phase"] == "Running" and row["started_at"] == attempt["started_at"]
        assert await reasons(store, run_id) == ["Queued", "Admitted", "Started"]

    with_store(scenario)


def test_pods_created_are_marked_together_once_each(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store)
        ids = [await add_run(store, f"r{i}") for i in range(3)]
        await store.admission.admit("ns", "t", POLICY)
        assert {p.run_id for p in await store.attempts.pods_to_create(10)} == set(ids)
        first = await store.attempts.pods_created([(ids[0], 1), (ids[1], 1)])
        assert set(first) == {(ids[0], 1), (ids[1], 1)}
        assert all(latency >= 0 for latency in first.values())
        # Marked once: a second mark (a pod adopted after AlreadyExists) reports nothing.
        second = await store.attempts.pods_created([(ids[0], 1), (ids[2], 1)])
        assert set(second) == {(ids[2], 1)}
        assert await store.attempts.pods_to_create(10) == []
        assert await store.attempts.pods_created([]) == {}

    with_store(scenario)


def test_finish_releases_the_slot_and_keeps_the_output(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 1})
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        await store.attempts.running(run_id, 1, NOW)
        done = Outcome(AttemptState.SUCCEEDED, "Completed", "returned", False, 0, {"n": 3})
        ended = await store.attempts.finish(run_id, 1, done, POLICY.end)
        assert ended is not None and ended.end.phase == "Succeeded"
        assert await store.attempts.finish(run_id, 1, done, POLICY.end) is None  # once
        row = await run_row(store, run_id)
        assert (row["phase"], row["output"], row["error"]) == ("Succeeded", {"n": 3}, None)
        assert row["finished_at"] is not None and await active_slots(store) == 0
        assert (await reasons(store, run_id))[-1] == "Succeeded"

    with_store(scenario)


def test_slot_release_pod_gone_holds_the_slot_until_the_pod_is_gone(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 1, "slotRelease": "PodGone"})
        first = await add_run(store, "first")
        second = await add_run(store, "second", created_at=NOW + dt.timedelta(seconds=1))
        [admitted] = await store.admission.admit("ns", "t", POLICY)
        assert admitted.run_id == first
        done = Outcome(AttemptState.SUCCEEDED, "Completed", "returned", False, 0)
        assert await store.attempts.finish(first, 1, done, POLICY.end) is not None
        # Ended, but its pod may still be stopping: the slot is not free yet.
        assert await store.admission.admit("ns", "t", POLICY) == []
        # The sweep sees it only once it has settled (a pod creation in flight has landed).
        assert await store.attempts.held_slots(dt.timedelta(hours=1), 10) == []
        [held] = await store.attempts.held_slots(dt.timedelta(0), 10)
        assert (held.run_id, held.number, held.pod_name) == (first, 1, "first-a1")
        assert await store.attempts.pod_gone(first, 1)
        assert not await store.attempts.pod_gone(first, 1)  # once
        [then] = await store.admission.admit("ns", "t", POLICY)
        assert then.run_id == second
        # A pod gone while its attempt is still active frees nothing early: `active` holds it.
        assert await store.attempts.pod_gone(second, 1)
        assert await store.admission.admit("ns", "t", POLICY) == []
        assert await store.attempts.held_slots(dt.timedelta(0), 10) == []

    with_store(scenario)


def test_slot_release_completion_frees_the_slot_when_the_attempt_ends(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 1})
        first = await add_run(store, "first")
        await add_run(store, "second", created_at=NOW + dt.timedelta(seconds=1))
        await store.admission.admit("ns", "t", POLICY)
        done = Outcome(AttemptState.SUCCEEDED, "Completed", "returned", False, 0)
        assert await store.attempts.finish(first, 1, done, POLICY.end) is not None
        assert await store.attempts.held_slots(dt.timedelta(0), 10) == []
        assert not await store.attempts.pod_gone(first, 1)
        assert len(await store.admission.admit("ns", "t", POLICY)) == 1

    with_store(scenario)


def test_retry_waits_by_postgres_clock_then_admits_the_next_attempt(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(
            store, retry={"maxAttempts": 2, "minDelay": "1h", "maxDelay": "1h", "randomize": False}
        )
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        ended = await store.attempts.finish(run_id, 1, failure(), POLICY.end)
        assert ended is not None and ended.end.retrying
        [row] = await query(
            store, "SELECT *, eligible_at - now() AS wait FROM drover_runs WHERE id = %s", run_id
        )
        assert row["phase"] == "Retrying" and row["error"]["type"] == "Error"
        # Set from Postgres' own clock, the one admission compares it with.
        assert dt.timedelta(minutes=59) < row["wait"] <= dt.timedelta(hours=1)
        assert await active_slots(store) == 0
        assert await store.admission.admit("ns", "t", POLICY) == []  # not before its time
        async with store.pool.connection() as conn:
            await conn.execute(
                "UPDATE drover_runs SET eligible_at = now() WHERE id = %s", (run_id,)
            )
        [second] = await store.admission.admit("ns", "t", POLICY)
        assert (second.run_id, second.number, second.pod_name) == (run_id, 2, "r-a2")
        assert (await reasons(store, run_id))[-3:] == [
            "AttemptFailed",
            "RetryScheduled",
            "Admitted",
        ]
        last = await store.attempts.finish(run_id, 2, failure(), POLICY.end)
        assert last is not None and last.end.phase == "Failed"  # no attempt left
        assert (await run_row(store, run_id))["phase"] == "Failed"

    with_store(scenario)


def test_cancel_frees_the_slot_and_asks_for_the_pod_to_stop(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 1})
        running = await add_run(store, "running")
        queued = await add_run(store, "queued", created_at=NOW + dt.timedelta(seconds=1))
        await store.admission.admit("ns", "t", POLICY)
        closed = await store.runs.close(running, reason="Canceled", message="m", deleted=False)
        assert closed is not None and closed.attempt is not None
        assert (
            await store.runs.close(running, reason="Canceled", message="m", deleted=False) is None
        )
        [attempt] = await query(store, "SELECT * FROM drover_attempts WHERE run_id = %s", running)
        assert (attempt["state"], attempt["active"], attempt["kill_requested"]) == (
            "Canceled",
            False,
            True,
        )
        [stop] = await store.attempts.pods_to_stop(10)
        assert stop.pod_name == "running-a1"
        await store.attempts.pod_stopped(running, 1)
        assert await store.attempts.pods_to_stop(10) == []
        assert (await run_row(store, running))["phase"] == "Canceled"
        # The queued run never starts once canceled; the freed slot goes to nobody else.
        await store.runs.close(queued, reason="Canceled", message="m", deleted=False)
        assert await store.admission.admit("ns", "t", POLICY) == []
        row = await run_row(store, queued)
        assert (row["phase"], row["attempt"], row["cancel_requested"]) == ("Canceled", 0, True)

    with_store(scenario)


def test_delete_of_a_finished_run_only_marks_it_gone(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store)
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        done = Outcome(AttemptState.SUCCEEDED, "Completed", "", False, 0)
        await store.attempts.finish(run_id, 1, done, POLICY.end)
        finished = (await run_row(store, run_id))["finished_at"]
        assert await store.runs.close(run_id, reason="Deleted", message="", deleted=True) is None
        row = await run_row(store, run_id)
        assert row["phase"] == "Succeeded" and row["deleted_at"] is not None
        assert row["finished_at"] == finished  # the purge counts from when it finished

    with_store(scenario)


def test_expire_ends_runs_not_started_within_their_ttl(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 2})
        started = await add_run(store, "started", expires_at=NOW + dt.timedelta(hours=1))
        await store.admission.admit("ns", "t", POLICY)
        async with store.pool.connection() as conn:  # its ttl passes after it was admitted
            await conn.execute(
                "UPDATE drover_runs SET expires_at = %s WHERE id = %s",
                (NOW - dt.timedelta(seconds=1), started),
            )
        stale = await add_run(store, "stale", expires_at=NOW - dt.timedelta(seconds=1),
                              created_at=NOW + dt.timedelta(seconds=1))  # fmt: skip
        # A slot is free, but a run past its ttl is never admitted (expire ends it).
        assert await store.admission.admit("ns", "t", POLICY) == []
        fresh = await add_run(store, "fresh", expires_at=NOW + dt.timedelta(hours=1),
                              created_at=NOW + dt.timedelta(seconds=2))  # fmt: skip
        expired = await store.runs.expire()
        assert [r.id for r in expired] == [stale]
        assert (await run_row(store, stale))["phase"] == "Expired"
        assert (await run_row(store, started))["phase"] == "Starting"  # admitted: never
        assert (await run_row(store, fresh))["phase"] == "Queued"
        assert await reasons(store, stale) == ["Queued", "Expired"]
        assert await store.runs.expire() == []

    with_store(scenario)


def test_stall_is_due_after_the_heartbeat_timeout(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, entrypoint="m:f", timeouts={"heartbeat": "30s"})
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        await store.attempts.running(run_id, 1, dt.datetime.now(dt.UTC))
        assert await store.runapi.heartbeat(run_id, 1)
        assert await store.attempts.due_stalls(10) == []
        async with store.pool.connection() as conn:
            await conn.execute(
                "UPDATE drover_attempts SET heartbeat_at = now() - interval '31 seconds',"
                " started_at = now() - interval '1 minute' WHERE run_id = %s",
                (run_id,),
            )
        [due] = await store.attempts.due_stalls(10)
        assert (due.run_id, due.heartbeat_timeout) == (run_id, dt.timedelta(seconds=30))
        outcome = attempts.stalled(dt.timedelta(seconds=30))
        ended = await store.attempts.finish(run_id, 1, outcome, POLICY.end, kill=True, kill_grace=0)
        assert ended is not None and ended.end.retrying
        [stop] = await store.attempts.pods_to_stop(10)
        assert stop.kill_grace == 0
        assert await store.attempts.due_stalls(10) == []
        assert not await store.runapi.heartbeat(run_id, 1)  # the zombie learns it is over

    with_store(scenario)


def test_the_outbox_holds_events_until_posted(with_store: Runner[Any]) -> None:
    """Queued and Admitted are history only (every run has them; its status says so): they
    never enter the outbox. The lines a user reads wait there until posted."""

    async def scenario(store: Store) -> None:
        await add_task(store)
        run_id = await add_run(store, "r")
        await store.admission.admit("ns", "t", POLICY)
        assert await store.outbox.unposted(100) == []
        assert await store.attempts.running(run_id, 1, NOW)
        done = Outcome(AttemptState.SUCCEEDED, "Completed", "exit 0", False, 0)
        assert await store.attempts.finish(run_id, 1, done, POLICY.end) is not None
        pending = await store.outbox.unposted(100)
        assert [(e.kind, e.reason, e.uid) for e in pending] == [
            ("TaskRun", "Started", run_id),
            ("TaskRun", "Succeeded", run_id),
        ]
        await store.outbox.mark_posted(pending[:1])
        assert [e.reason for e in await store.outbox.unposted(100)] == ["Succeeded"]
        assert await reasons(store, run_id) == ["Queued", "Admitted", "Started", "Succeeded"]

    with_store(scenario)


def test_unlimited_admission_takes_every_waiting_run(with_store: Runner[Any]) -> None:
    """Pages of waiting runs: admitted runs leave the waiting set as they go."""

    async def scenario(store: Store) -> None:
        await add_task(store)
        for i in range(450):
            await add_run(store, f"r{i}", created_at=NOW + dt.timedelta(microseconds=i))
        admitted = await store.admission.admit("ns", "t", POLICY)
        assert len(admitted) == 450 and await active_slots(store) == 450

    with_store(scenario)


def test_one_replica_at_a_time_writes_a_runs_status(with_store: Runner[Any], dsn: str) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store)
        run_ids = [await add_run(store, f"r{i}") for i in range(4)]
        other = await Store.open(dsn, 4)  # a second replica
        try:
            mine, theirs = await asyncio.gather(store.runs.unpushed(10), other.runs.unpushed(10))
            claimed = [r.id for r in mine] + [r.id for r in theirs]
            assert sorted(claimed) == sorted(run_ids)  # each claimed once
            assert await store.runs.unpushed(10) == []  # leased
            first = (mine or theirs)[0]
            await store.runs.mark_pushed(first.id, first.version)
            await store.runs.release_push(claimed[-1])
            again = [r.id for r in await other.runs.unpushed(10)]
            assert again == [claimed[-1]]  # released, not pushed: claimable again
            # A newer version after a push is behind again, and claimable once the lease ends.
            async with store.pool.connection() as conn:
                await conn.execute(
                    "UPDATE drover_runs SET version = version + 1, push_lease_until = NULL"
                    " WHERE id = %s",
                    (first.id,),
                )
            assert [r.id for r in await store.runs.unpushed(10)] == [first.id]
        finally:
            await other.close()

    with_store(scenario)


def test_a_batch_of_statuses_is_read_and_marked_at_once(with_store: Runner[Any]) -> None:
    """The status writer reads each run's latest attempts, and marks the runs it wrote, with
    one statement per batch: each run gets its own attempts, newest first, at most `limit`."""

    async def scenario(store: Store) -> None:
        await add_task(store, retry={"maxAttempts": 3})
        first, second, idle = [await add_run(store, n) for n in ("a", "b", "c")]
        await store.admission.admit("ns", "t", POLICY)
        failed = Outcome(AttemptState.FAILED, "Error", "exit 1", True, 1)
        for number in (1, 2):
            await store.attempts.running(first, number, NOW)
            await store.attempts.finish(first, number, failed, POLICY.end)
            async with store.pool.connection() as conn:  # retry at once
                await conn.execute(
                    "UPDATE drover_runs SET eligible_at = NULL WHERE id = %s", (first,)
                )
            await store.admission.admit("ns", "t", POLICY)
        found = await store.runs.attempts_of([first, second, idle], 2)
        assert [a.number for a in found[first]] == [3, 2]
        assert [a.number for a in found[second]] == [1]
        pending = await store.runs.unpushed(10)
        await store.runs.mark_pushed_many([(r.id, r.version) for r in pending])
        async with store.pool.connection() as conn:
            behind = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM drover_runs WHERE version > pushed_version"
                )
            ).fetchone()
        assert behind is not None and behind["n"] == 0
        assert await store.runs.unpushed(10) == []

    with_store(scenario)
