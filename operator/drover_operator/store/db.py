"""The connection pool, and LISTEN/NOTIFY used only as a wake-up hint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

WAKE_CHANNEL = "drover_wake"

Connection = psycopg.AsyncConnection[DictRow]


async def open_pool(dsn: str, size: int) -> AsyncConnectionPool[Connection]:
    # No per-checkout health check: it would cost a round trip on every request. A connection
    # broken by a database restart fails its query (the API answers 503, callers retry) and
    # the pool replaces it.
    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
        dsn,
        min_size=2,
        max_size=size,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


@contextlib.asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Connection]) -> AsyncIterator[Connection]:
    async with pool.connection() as conn, conn.transaction():
        yield conn


async def listen(dsn: str, on_wake: Callable[[str], None], stop: asyncio.Event) -> None:
    """Call `on_wake(payload)` for every NOTIFY on the wake channel, reconnecting forever.

    Only a hint: every loop that is woken also polls, so a lost notification delays work by
    at most one poll interval.
    """
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {WAKE_CHANNEL}")
                async for notify in conn.notifies():
                    on_wake(notify.payload)
        except psycopg.Error as exc:
            log.warning("LISTEN connection lost (%s); reconnecting", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
