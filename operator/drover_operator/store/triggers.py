"""Idempotency keys: a key bound to the run it started, per (namespace, Task).

Binding a key is one transaction under an advisory lock on the key, so concurrent requests
with one key, on any replica, agree on one run name. The TaskRun is created after the commit,
under that name: Kubernetes refuses a second object of the same name, which makes creation
idempotent too. A key is released — the next trigger with it starts a new run — when it
expires, or when its run ended Failed, TimedOut, Canceled or Expired.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from drover.protocol.phases import Phase
from drover_operator.store.db import Pool, advisory_lock, fetch_one, sql_list, transaction

#: Runs that ended this way give their key back.
RELEASING = frozenset({Phase.FAILED, Phase.TIMED_OUT, Phase.CANCELED, Phase.EXPIRED})

BINDING = f"""
SELECT k.run_name, k.run_id, r.phase,
       (k.expires_at <= now() OR r.phase IN ({sql_list(RELEASING)})) AS released
FROM drover_idempotency_keys k LEFT JOIN drover_runs r ON r.id = k.run_id
WHERE k.namespace = %s AND k.task = %s AND k.key = %s
"""

BIND = """
INSERT INTO drover_idempotency_keys (namespace, task, key, run_name, expires_at)
VALUES (%(namespace)s, %(task)s, %(key)s, %(run_name)s, now() + %(ttl)s::interval)
ON CONFLICT (namespace, task, key) DO UPDATE
SET run_name = EXCLUDED.run_name, run_id = NULL, expires_at = EXCLUDED.expires_at,
    created_at = now()
"""

SET_RUN_ID = """
UPDATE drover_idempotency_keys SET run_id = %s
WHERE namespace = %s AND task = %s AND key = %s AND run_name = %s
"""

PURGE_EXPIRED = """
DELETE FROM drover_idempotency_keys WHERE ctid IN (
    SELECT ctid FROM drover_idempotency_keys WHERE expires_at <= now() LIMIT %s)
"""


@dataclass(frozen=True)
class Binding:
    """The run a key is bound to. `fresh`: bound by this request (a new run to create)."""

    run_name: str
    run_id: str | None
    phase: str | None
    fresh: bool


@dataclass(frozen=True)
class _Row:
    run_name: str
    run_id: str | None
    phase: str | None
    released: bool | None


class TriggerStore:
    """The `drover_idempotency_keys` table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def bind(
        self,
        namespace: str,
        task: str,
        key: str,
        ttl: dt.timedelta,
        new_name: Callable[[], str],
    ) -> Binding:
        """The run `key` is bound to; when it is bound to none (or released), bind it to a
        new run named `new_name()`, to be created by the caller."""
        async with transaction(self.pool) as conn:
            await advisory_lock(conn, f"drover.idempotency/{namespace}/{task}/{key}")
            row = await fetch_one(conn, _Row, BINDING, (namespace, task, key))
            if row is not None and not row.released:
                return Binding(row.run_name, row.run_id, row.phase, fresh=False)
            name = new_name()
            await conn.execute(
                BIND,
                {"namespace": namespace, "task": task, "key": key, "run_name": name, "ttl": ttl},
            )
            return Binding(name, None, None, fresh=True)

    async def created(self, namespace: str, task: str, key: str, name: str, run_id: str) -> None:
        """The TaskRun of a binding exists: remember its UID (what keeps the key bound to a
        run that ended, and releases it when that run failed)."""
        async with self.pool.connection() as conn:
            await conn.execute(SET_RUN_ID, (run_id, namespace, task, key, name))

    async def purge_expired(self, limit: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(PURGE_EXPIRED, (limit,))
