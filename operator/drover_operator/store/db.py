"""The connection pool, typed queries, and LISTEN/NOTIFY used only as a wake-up hint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg.rows import DictRow, class_row, dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

#: Every replica LISTENs here; a commit that frees a slot or records a run NOTIFYs.
WAKE_CHANNEL = "drover_wake"
#: Runs recorded or changing phase, log lines written (the dashboard's live updates):
#: NOTIFYed by triggers (migration 0009).
EVENTS_CHANNEL = "drover_events"

Connection: TypeAlias = psycopg.AsyncConnection[DictRow]
Pool: TypeAlias = AsyncConnectionPool[Connection]
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
Row = TypeVar("Row")
Other = TypeVar("Other")


def _configure_types(conn: psycopg.AsyncConnection[Any]) -> None:
    # Run and Task ids are Kubernetes UIDs, strings everywhere else: load uuid columns as str.
    conn.adapters.register_loader("uuid", TextLoader)


async def _configure(conn: Connection) -> None:
    _configure_types(conn)


async def open_pool(dsn: str, size: int) -> Pool:
    # No per-checkout health check: it would cost a round trip on every request. A connection
    # broken by a database restart fails its query (the API answers 503, callers retry) and
    # the pool replaces it.
    pool: Pool = AsyncConnectionPool(
        dsn,
        min_size=2,
        max_size=size,
        kwargs={"row_factory": dict_row, "autocommit": True},
        configure=_configure,
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


@contextlib.asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    async with pool.connection() as conn, conn.transaction():
        yield conn


@contextlib.asynccontextmanager
async def pipelined(pool: Pool) -> AsyncIterator[Connection]:
    """A transaction in pipeline mode: statements go out without waiting for each other, so a
    round trip is paid only where a result is read and at the commit. For the hot paths (a
    run's record and admission, an attempt's start and end), whose statements each cost a
    round trip when sent one after another."""
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        yield conn


async def fetch_all(conn: Connection, row: type[Row], query: str, params: Params = ()) -> list[Row]:
    """All rows of `query` as `row` instances (the columns are its fields)."""
    async with conn.cursor(row_factory=class_row(row)) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


async def fetch_one(
    conn: Connection, row: type[Row], query: str, params: Params = ()
) -> Row | None:
    async with conn.cursor(row_factory=class_row(row)) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchone()


async def fetch_two(
    conn: Connection,
    first: tuple[type[Row], str, Params],
    second: tuple[type[Other], str, Params],
) -> tuple[Row | None, Other | None]:
    """The first row of each of two queries, sent one after the other before either result
    is read: in pipeline mode (`pipelined`), one round trip for both."""
    async with (
        conn.cursor(row_factory=class_row(first[0])) as one,
        conn.cursor(row_factory=class_row(second[0])) as two,
    ):
        await one.execute(first[1], first[2])
        await two.execute(second[1], second[2])
        return await one.fetchone(), await two.fetchone()


async def fetch_value(conn: Connection, query: str, params: Params = ()) -> Any:
    """The first column of the first row, or None."""
    cursor = await conn.execute(query, params)
    found = await cursor.fetchone()
    return None if found is None else next(iter(found.values()))


def sql_list(values: Iterable[str]) -> str:
    """Constant strings as an SQL list (`'a', 'b'`), for `IN (...)` in a query's text."""
    return ", ".join(f"'{value}'" for value in sorted(values))


async def notify(conn: Connection, payload: str) -> None:
    """Delivered on commit: every replica's loop wakes promptly."""
    await conn.execute("SELECT pg_notify(%s, %s)", (WAKE_CHANNEL, payload))


async def advisory_lock(conn: Connection, key: str) -> None:
    """A transaction-scoped lock on `key`: one holder at a time across replicas."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


async def listen(
    dsn: str, on_wake: Callable[[str], None], stop: asyncio.Event, channel: str = WAKE_CHANNEL
) -> None:
    """Call `on_wake(payload)` for every NOTIFY on `channel`, reconnecting forever.

    Only a hint: every loop that is woken also polls, so a lost notification delays work by
    at most one poll interval.
    """
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                async for notification in conn.notifies():
                    on_wake(notification.payload)
        except psycopg.Error as exc:
            log.warning("LISTEN connection lost (%s); reconnecting", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def ping(pool: Pool) -> None:
    """Raises when the database cannot answer."""
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
