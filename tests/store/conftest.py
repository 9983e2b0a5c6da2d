"""The store's tier: real Postgres (the run's own server, no control plane), one fresh
database per test, migrated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from drover_operator.store import Store
from drover_operator.store.migrate import migrate

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/store/" in str(item.path):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def dsn(pg_database: str) -> str:
    asyncio.run(migrate(pg_database))
    return pg_database


@pytest.fixture
def with_store(dsn: str) -> Callable[[Callable[[Store], Awaitable[T]]], T]:
    """Run `scenario(store)` on a Store over the test's database, in an event loop."""

    def run(scenario: Callable[[Store], Awaitable[T]]) -> T:
        async def main() -> T:
            store = await Store.open(dsn, 4)
            try:
                return await scenario(store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


async def query(store: Store, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Read the tables directly: what a transition wrote, seen from outside the store's API."""
    async with store.pool.connection() as conn:
        cursor = await conn.execute(sql, params)
        return list(await cursor.fetchall())


async def aiter_all(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]
