"""Waitpoint tokens: created by a run at a position of its code, completed once by a person
or a system (or timed out), and listed for the CLI and the dashboard. The secret in a
token's URL is derived from its id (`domain.tokens.waitpoint_secret`): nothing secret is
stored here."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from drover.protocol.phases import FINISHED_PHASES
from drover_operator.domain.waits import TokenRecord, TokenState
from drover_operator.store.db import (
    Connection,
    Pool,
    fetch_all,
    fetch_one,
    notify,
    sql_list,
    transaction,
)

_FINISHED = sql_list(FINISHED_PHASES)

TOKEN_COLUMNS = """
t.id::text AS id, t.namespace, t.run_id::text AS run_id, r.name AS run, r.task, t.seq, t.state,
t.data, t.tags, t.created_at, t.timeout_at, t.completed_at
"""

TOKEN = f"""
SELECT {TOKEN_COLUMNS} FROM drover_tokens t JOIN drover_runs r ON r.id = t.run_id
WHERE t.id = %s
"""

TOKEN_AT = f"""
SELECT {TOKEN_COLUMNS} FROM drover_tokens t JOIN drover_runs r ON r.id = t.run_id
WHERE t.run_id = %s AND t.seq = %s
"""

TOKEN_BY_KEY = f"""
SELECT {TOKEN_COLUMNS} FROM drover_tokens t JOIN drover_runs r ON r.id = t.run_id
WHERE t.namespace = %s AND t.idempotency_key = %s
"""

INSERT_TOKEN = """
INSERT INTO drover_tokens (id, namespace, run_id, seq, timeout_at, state, tags, idempotency_key)
VALUES (%(id)s, %(namespace)s, %(run_id)s, %(seq)s, now() + %(timeout)s::interval, 'waiting',
        %(tags)s, %(key)s)
ON CONFLICT DO NOTHING
"""

COMPLETE_TOKEN = """
UPDATE drover_tokens SET state = 'completed', data = %s, completed_at = now()
WHERE id = %s AND state = 'waiting'
"""

TIME_OUT_TOKENS = """
UPDATE drover_tokens SET state = 'timed_out', completed_at = now()
WHERE state = 'waiting' AND timeout_at <= now()
"""

# Newest first; `waiting` lists tokens someone can still usefully complete.
TOKENS = f"""
SELECT {TOKEN_COLUMNS} FROM drover_tokens t JOIN drover_runs r ON r.id = t.run_id
WHERE (%(namespace)s::text IS NULL OR t.namespace = %(namespace)s)
  AND (%(state)s::text IS NULL OR t.state = %(state)s)
  AND (%(state)s::text IS DISTINCT FROM 'waiting' OR r.phase NOT IN ({_FINISHED}))
  AND (%(task)s::text IS NULL OR r.task = %(task)s)
  AND (%(run)s::text IS NULL OR r.name = %(run)s)
ORDER BY t.created_at DESC, t.id
LIMIT %(limit)s
"""


async def time_out_tokens(conn: Connection) -> None:
    await conn.execute(TIME_OUT_TOKENS)


class TokenStore:
    """The `drover_tokens` table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def create(
        self,
        run_id: str,
        namespace: str,
        seq: int,
        lifetime: dt.timedelta,
        *,
        idempotency_key: str | None,
        tags: list[str] | None,
    ) -> TokenRecord:
        """The token at position `seq` of the run: created now, or the one created there
        before (a replay), or the namespace's token with the same idempotency key."""
        async with transaction(self.pool) as conn:
            existing = await fetch_one(conn, TokenRecord, TOKEN_AT, (run_id, seq))
            if existing is None and idempotency_key is not None:
                existing = await fetch_one(
                    conn, TokenRecord, TOKEN_BY_KEY, (namespace, idempotency_key)
                )
            if existing is not None:
                return existing
            token_id = str(uuid.uuid4())
            await conn.execute(
                INSERT_TOKEN,
                {
                    "id": token_id,
                    "namespace": namespace,
                    "run_id": run_id,
                    "seq": seq,
                    "timeout": lifetime,
                    "tags": Jsonb(tags) if tags else None,
                    "key": idempotency_key,
                },
            )
            # Inserted, or a concurrent creation at the same position or key won.
            for query, params in (
                (TOKEN_AT, (run_id, seq)),
                (TOKEN_BY_KEY, (namespace, idempotency_key)),
            ):
                found = await fetch_one(conn, TokenRecord, query, params)
                if found is not None:
                    return found
        raise AssertionError("a token was inserted or found")

    async def complete(self, token_id: str, data: Any) -> tuple[TokenRecord | None, bool]:
        """Complete a token; the first completion wins. (The token, whether this call
        completed it); (None, False) when there is no such token."""
        async with transaction(self.pool) as conn:
            cursor = await conn.execute(COMPLETE_TOKEN, (Jsonb(data), token_id))
            completed = cursor.rowcount == 1
            if completed:
                await notify(conn, "token")  # the resolver resumes its waiter
            token = await fetch_one(conn, TokenRecord, TOKEN, (token_id,))
        return token, completed

    async def get(self, token_id: str) -> TokenRecord | None:
        async with self.pool.connection() as conn:
            return await fetch_one(conn, TokenRecord, TOKEN, (token_id,))

    async def list(
        self,
        namespace: str | None,
        *,
        state: TokenState | None = None,
        task: str | None = None,
        run: str | None = None,
        limit: int = 100,
    ) -> list[TokenRecord]:
        async with self.pool.connection() as conn:
            return await fetch_all(
                conn,
                TokenRecord,
                TOKENS,
                {
                    "namespace": namespace,
                    "state": state.value if state else None,
                    "task": task,
                    "run": run,
                    "limit": limit,
                },
            )
