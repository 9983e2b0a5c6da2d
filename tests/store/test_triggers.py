"""The store behind the trigger API, on real Postgres: idempotency keys (one run per key
however many requests race, released when the run fails or the key expires), the run
history's keyset pages and filters (indexed), and why a waiting run waits."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.store import Store
from drover_operator.store.runs import NewRun
from drover_operator.store.runviews import Cursor, RunFilter
from tests.store.conftest import query
from tests.store.test_transitions import POLICY, Runner, add_run, add_task, failure, run_row

NOW = dt.datetime.now(dt.UTC)
TTL = dt.timedelta(days=30)
FIRST, SECOND = str(uuid.uuid4()), str(uuid.uuid4())


def test_concurrent_binds_of_one_key_agree_on_one_run(with_store: Runner[Any], dsn: str) -> None:
    async def scenario(store: Store) -> list[tuple[str, bool]]:
        # Two "replicas": two pools, 50 requests at once.
        other = await Store.open(dsn, 8)
        try:
            names = iter(f"run-{i}" for i in range(1000))

            async def bind(s: Store) -> tuple[str, bool]:
                binding = await s.triggers.bind("ns", "t", "key-1", TTL, lambda: next(names))
                return binding.run_name, binding.fresh

            return list(await asyncio.gather(*(bind(s) for s in [store, other] * 25)))
        finally:
            await other.close()

    results = with_store(scenario)
    assert len({name for name, _ in results}) == 1
    assert sum(fresh for _, fresh in results) == 1


def test_a_key_is_released_when_its_run_fails_and_kept_when_it_succeeds(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, retry={"maxAttempts": 1})
        for outcome, released in ((failure(), True), (None, False)):
            key = f"key-{released}"
            first = await store.triggers.bind("ns", "t", key, TTL, lambda: "first")
            run_id = await add_run(store, first.run_name)
            await store.triggers.created("ns", "t", key, first.run_name, run_id)
            await store.admission.admit("ns", "t", POLICY)
            if outcome is not None:
                await store.attempts.finish(run_id, 1, outcome, POLICY.end)
            again = await store.triggers.bind("ns", "t", key, TTL, lambda: "second")
            assert again.fresh is released
            assert again.run_name == ("second" if released else first.run_name)
            if not released:
                assert again.run_id == run_id

    with_store(scenario)


def test_a_key_expires_with_its_ttl(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        first = await store.triggers.bind("ns", "t", "k", dt.timedelta(hours=1), lambda: "a")
        assert first.fresh
        assert not (await store.triggers.bind("ns", "t", "k", TTL, lambda: "b")).fresh
        async with store.pool.connection() as conn:
            await conn.execute("UPDATE drover_idempotency_keys SET expires_at = now()")
        later = await store.triggers.bind("ns", "t", "k", TTL, lambda: "c")
        assert later.fresh and later.run_name == "c"
        # Keys are per Task.
        assert (await store.triggers.bind("ns", "other", "k", TTL, lambda: "d")).fresh

    with_store(scenario)


async def _seed(store: Store, count: int, tasks: tuple[str, ...] = ("a", "b")) -> None:
    """`count` finished runs whose TaskRuns are gone, one a second, alternating Tasks."""
    async with store.pool.connection() as conn, conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO drover_runs (id, namespace, name, task, phase, created_at, tags,"
            " deleted_at, finished_at, version, pushed_version)"
            " VALUES (%s, 'ns', %s, %s, %s, %s, %s, now(), now(), 1, 1)",
            [
                (
                    str(uuid.uuid4()),
                    f"r{i:05d}",
                    tasks[i % len(tasks)],
                    "Succeeded" if i % 3 else "Failed",
                    NOW - dt.timedelta(seconds=count - i),
                    '{"vip": ""}' if i % 10 == 0 else None,
                )
                for i in range(count)
            ],
        )


def test_the_history_pages_through_every_run_newest_first(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await _seed(store, 1000)
        seen: list[str] = []
        after: Cursor | None = None
        while True:
            page = await store.runviews.list(RunFilter("ns"), 100, after)
            seen += [r.name for r in page]
            if len(page) < 100:
                break
            after = Cursor(page[-1].created_at, page[-1].id)
        assert seen == [f"r{i:05d}" for i in reversed(range(1000))]
        failed_a = await store.runviews.list(RunFilter("ns", task="a", phases=("Failed",)), 1000)
        assert {r.task for r in failed_a} == {"a"} and {r.phase for r in failed_a} == {"Failed"}
        assert len(failed_a) == len([i for i in range(0, 1000, 2) if i % 3 == 0])
        vip = await store.runviews.list(RunFilter("ns", tags={"vip": ""}), 1000)
        assert len(vip) == 100
        any_vip = await store.runviews.list(RunFilter("ns", tags={"vip": None}), 1000)
        assert len(any_vip) == 100
        since = await store.runviews.list(
            RunFilter("ns", since=NOW - dt.timedelta(seconds=10)), 1000
        )
        assert len(since) == 10

    with_store(scenario)


def test_the_first_page_over_ten_thousand_runs_is_an_index_scan(
    with_store: Runner[Any], capsys: Any
) -> None:
    async def scenario(store: Store) -> tuple[str, float]:
        await _seed(store, 10_000)
        async with store.pool.connection() as conn:
            await conn.execute("ANALYZE drover_runs")
            cursor = await conn.execute(
                "EXPLAIN SELECT * FROM drover_runs r WHERE r.namespace = 'ns' AND r.task = 'a'"
                " ORDER BY r.created_at DESC, r.id DESC LIMIT 51"
            )
            plan = "\n".join(str(next(iter(row.values()))) for row in await cursor.fetchall())
        started = time.perf_counter()
        await store.runviews.list(RunFilter("ns", task="a"), 51)
        return plan, (time.perf_counter() - started) * 1000

    plan, ms = with_store(scenario)
    assert "drover_runs_history_by_task" in plan and "Seq Scan" not in plan, plan
    with capsys.disabled():
        print(f"\nfirst page of 50 over 10,000 runs: {ms:.1f} ms")


def test_admission_says_why_runs_wait_and_where(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await add_task(store, concurrency={"limit": 2, "perKeyLimit": 1})
        ids = [
            await add_run(
                store,
                f"r{i}",
                concurrency_key="k" if i < 2 else None,
                created_at=NOW + dt.timedelta(seconds=i),
            )
            for i in range(5)
        ]
        admitted = await store.admission.admit("ns", "t", LifecyclePolicy(TTL, None))
        assert [a.run_id for a in admitted] == [ids[0], ids[2]]
        held_by_key = await run_row(store, ids[1])
        assert (
            held_by_key["wait_reason"] == "PerKeyLimit" and "key k" in held_by_key["wait_message"]
        )
        for run_id in ids[3:]:
            row = await run_row(store, run_id)
            assert row["wait_reason"] == "ConcurrencyLimit"
        version = (await run_row(store, ids[4]))["version"]
        await store.admission.admit("ns", "t", LifecyclePolicy(TTL, None))
        assert (await run_row(store, ids[4]))["version"] == version  # unchanged: not pushed again
        last = await store.runs.by_name("ns", "r4")
        assert last is not None and await store.runviews.queue_position(last) == 2

    with_store(scenario)


def test_initial_metadata_is_recorded(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        run_id = str(uuid.uuid4())
        await store.runs.record(
            NewRun(
                id=run_id,
                namespace="ns",
                name="r",
                task="t",
                generation=1,
                created_at=NOW,
                metadata={"source": "signup"},
            )
        )
        [row] = await query(store, "SELECT metadata FROM drover_runs WHERE id = %s", run_id)
        assert row["metadata"] == {"source": "signup"}

    with_store(scenario)


def test_webhook_keys_rotate_and_go_with_their_task(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> None:
        await store.tasks.upsert(
            "ns",
            "t",
            FIRST,
            1,
            {"image": "x", "webhook": {}},
            None,
        )
        await store.webhooks.declare("ns", "t", FIRST, "Idempotency-Key")
        first = await store.webhooks.get("ns", "t")
        assert first is not None and len(first.key) == 32
        await store.webhooks.declare("ns", "t", FIRST, "X-GitHub-Delivery")
        same = await store.webhooks.get("ns", "t")
        assert same is not None and same.key == first.key
        assert same.idempotency_header == "X-GitHub-Delivery"
        rotated = await store.webhooks.rotate(same)
        assert rotated is not None and rotated.key != first.key
        assert await store.webhooks.rotate(same) is None  # already rotated
        await store.webhooks.declare("ns", "t", SECOND, "Idempotency-Key")  # recreated Task
        renewed = await store.webhooks.get("ns", "t")
        assert renewed is not None and renewed.key != rotated.key and renewed.secret_uid is None
        await store.tasks.upsert("ns", "t", SECOND, 2, {"image": "x"}, None)
        await store.webhooks.drop_stale()
        assert await store.webhooks.get("ns", "t") is None

    with_store(scenario)
