"""Checkpoints on real Postgres: a retried identical step write always succeeds — also while
its first try is still in flight, holding the position uncommitted — and a position never
takes another name or another value."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.types.json import Jsonb

from drover.protocol.wire import StepRecord
from drover_operator.domain.tokens import attempt_token, token_hash
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.store import Store
from drover_operator.store.runapi import PUT_STEP_CHECKED, StepConflictError
from tests.store.conftest import query
from tests.store.test_transitions import add_run, add_task

T = TypeVar("T")
Runner = Callable[[Callable[[Store], Awaitable[T]]], T]

KEY = b"k" * 32
POLICY = LifecyclePolicy(dt.timedelta(minutes=10), signing_key=KEY)


async def running_attempt(store: Store) -> tuple[str, str]:
    """A run with an admitted attempt 1; its id and the attempt's token hash."""
    await add_task(store, entrypoint="shop.tasks:sync")
    run_id = await add_run(store, "r")
    assert len(await store.admission.admit("ns", "t", POLICY)) == 1
    return run_id, token_hash(attempt_token(KEY, run_id, 1))


async def stored(store: Store, run_id: str) -> list[tuple[int, str, Any]]:
    rows = await query(
        store, "SELECT seq, name, value FROM drover_steps WHERE run_id = %s ORDER BY seq", run_id
    )
    return [(r["seq"], r["name"], r["value"]) for r in rows]


def step(seq: int, name: str, value: Any) -> StepRecord:
    return StepRecord(seq=seq, name=name, value=value)


def test_a_retried_write_racing_its_own_first_try_succeeds(
    with_store: Runner[Any], dsn: str
) -> None:
    """The first try has inserted the step but not committed when the retry arrives (as when
    a runner's request times out while the operator still works on it): the retry waits for
    it, and must then answer "stored" — not take the position it could not see for another
    step's (which failed runs for good with `non-determinism`)."""

    async def scenario(store: Store) -> tuple[bool, list[Any]]:
        run_id, hashed = await running_attempt(store)
        record = step(3, "charge", {"amount": 12.5, "currency": "EUR"})
        params = {
            "run_id": run_id,
            "number": 1,
            "token_hash": hashed,
            "seq": 3,
            "name": "charge",
            "value": Jsonb(record.value),
            "started_at": None,
        }
        async with await psycopg.AsyncConnection.connect(dsn) as first_try:
            # The first try's statement, in a transaction still open: the position is taken
            # but not committed.
            await first_try.execute(PUT_STEP_CHECKED, params)
            retry = asyncio.create_task(store.runapi.put_step_checked(run_id, 1, hashed, record))
            await wait_blocked(store, "drover_steps")
            await first_try.commit()
            answer = await retry
        return answer, await stored(store, run_id)

    answer, rows = with_store(scenario)
    assert answer is True
    assert rows == [(3, "charge", {"amount": 12.5, "currency": "EUR"})]


def test_a_retried_batch_racing_its_own_first_try_succeeds(
    with_store: Runner[Any], dsn: str
) -> None:
    async def scenario(store: Store) -> list[Any]:
        run_id, _ = await running_attempt(store)
        batch = [step(0, "a", 1), step(1, "b", [1, 2])]
        async with await psycopg.AsyncConnection.connect(dsn) as first_try:
            for record in batch:
                await first_try.execute(
                    "INSERT INTO drover_steps (run_id, seq, name, value, attempt)"
                    " VALUES (%s, %s, %s, %s, 1)",
                    (run_id, record.seq, record.name, Jsonb(record.value)),
                )
            retry = asyncio.create_task(store.runapi.put_steps(run_id, 1, batch))
            await wait_blocked(store, "drover_steps")
            await first_try.commit()
            await retry  # no StepConflictError
        return await stored(store, run_id)

    assert with_store(scenario) == [(0, "a", 1), (1, "b", [1, 2])]


async def wait_blocked(store: Store, table: str) -> None:
    """Until a statement on `table` waits for another transaction's lock."""

    async def blocked() -> bool:
        rows = await query(
            store,
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE %s",
            f"%{table}%",
        )
        return bool(rows[0]["n"])

    deadline = asyncio.get_running_loop().time() + 30
    while not await blocked():
        assert asyncio.get_running_loop().time() < deadline, "the retry never waited"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("checked", [True, False], ids=["single", "batch"])
def test_identical_means_same_position_name_and_json_value(
    with_store: Runner[Any], checked: bool
) -> None:
    async def scenario(store: Store) -> tuple[list[str], list[Any]]:
        run_id, hashed = await running_attempt(store)

        async def put(record: StepRecord) -> str:
            try:
                if checked:
                    assert await store.runapi.put_step_checked(run_id, 1, hashed, record)
                else:
                    await store.runapi.put_steps(run_id, 1, [record])
            except StepConflictError as exc:
                return str(exc)
            return "ok"

        answers = [
            await put(step(0, "fetch", {"id": 7, "tags": ["a"], "price": 1.5})),
            # The same JSON, spelt otherwise: identical.
            await put(step(0, "fetch", {"price": 1.50, "tags": ["a"], "id": 7})),
            await put(step(0, "other", {"id": 7, "tags": ["a"], "price": 1.5})),
            await put(step(0, "fetch", {"id": 8, "tags": ["a"], "price": 1.5})),
            await put(step(0, "fetch", None)),
        ]
        return answers, await stored(store, run_id)

    answers, rows = with_store(scenario)
    assert answers[:2] == ["ok", "ok"]
    assert "is 'fetch' in the run's history, not 'other'" in answers[2]
    assert "'fetch' is recorded with another value" in answers[3]
    assert "'fetch' is recorded with another value" in answers[4]
    assert rows == [(0, "fetch", {"id": 7, "tags": ["a"], "price": 1.5})]


def test_a_batch_with_a_conflict_stores_nothing(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> list[Any]:
        run_id, _ = await running_attempt(store)
        await store.runapi.put_steps(run_id, 1, [step(0, "a", 1)])
        with pytest.raises(StepConflictError):
            await store.runapi.put_steps(run_id, 1, [step(1, "b", 2), step(0, "a", 2)])
        with pytest.raises(StepConflictError):  # a batch that contradicts itself
            await store.runapi.put_steps(run_id, 1, [step(2, "c", 1), step(2, "c", 2)])
        return await stored(store, run_id)

    assert with_store(scenario) == [(0, "a", 1)]


def test_only_the_active_attempts_token_stores(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> list[Any]:
        run_id, hashed = await running_attempt(store)
        wrong = token_hash(attempt_token(b"j" * 32, run_id, 1))
        assert not await store.runapi.put_step_checked(run_id, 1, wrong, step(0, "a", 1))
        assert not await store.runapi.put_step_checked(run_id, 2, hashed, step(0, "a", 1))
        return await stored(store, run_id)

    assert with_store(scenario) == []
