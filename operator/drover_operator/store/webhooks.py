"""Webhook signing keys, one per Task with `spec.webhook`, kept in Postgres so the operator
never reads Secrets. Each key is also written to a Secret `<task>-webhook` for the sender;
when that Secret is found recreated (a new UID), it was deleted: the key is rotated."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from drover_operator.store.db import Pool, fetch_all, fetch_one, transaction

UPSERT = """
INSERT INTO drover_webhooks (namespace, task, task_uid, key, idempotency_header)
VALUES (%(namespace)s, %(task)s, %(task_uid)s, %(key)s, %(header)s)
ON CONFLICT (namespace, task) DO UPDATE
SET idempotency_header = EXCLUDED.idempotency_header,
    -- A new Task of the same name gets a new key (and a new Secret).
    key = CASE WHEN drover_webhooks.task_uid = EXCLUDED.task_uid
               THEN drover_webhooks.key ELSE EXCLUDED.key END,
    secret_uid = CASE WHEN drover_webhooks.task_uid = EXCLUDED.task_uid
                      THEN drover_webhooks.secret_uid END,
    checked_at = CASE WHEN drover_webhooks.task_uid = EXCLUDED.task_uid
                      THEN drover_webhooks.checked_at END,
    task_uid = EXCLUDED.task_uid, updated_at = now()
"""

DROP = "DELETE FROM drover_webhooks WHERE namespace = %s AND task = %s"

# Webhooks of Tasks that are gone or no longer declare one.
DROP_STALE = """
DELETE FROM drover_webhooks w
WHERE NOT EXISTS (SELECT 1 FROM drover_tasks t WHERE t.namespace = w.namespace
                  AND t.name = w.task AND t.uid = w.task_uid AND t.spec ? 'webhook')
"""

COLUMNS = "namespace, task, task_uid, key, idempotency_header, secret_uid"

GET = f"SELECT {COLUMNS} FROM drover_webhooks WHERE namespace = %s AND task = %s"

# Secrets never written, or not checked for a while (to notice one deleted).
DUE = f"""
SELECT {COLUMNS} FROM drover_webhooks
WHERE secret_uid IS NULL OR checked_at IS NULL OR checked_at <= now() - %s::interval
ORDER BY checked_at NULLS FIRST LIMIT %s
"""

WRITTEN = """
UPDATE drover_webhooks SET secret_uid = %s, checked_at = now()
WHERE namespace = %s AND task = %s AND key = %s
"""

ROTATE = """
UPDATE drover_webhooks SET key = %s, updated_at = now()
WHERE namespace = %s AND task = %s AND key = %s
"""


@dataclass(frozen=True)
class WebhookKey:
    namespace: str
    task: str
    task_uid: str
    key: bytes
    idempotency_header: str
    secret_uid: str | None


def _new_key() -> bytes:
    return secrets.token_bytes(32)


class WebhookStore:
    """The `drover_webhooks` table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def declare(self, namespace: str, task: str, task_uid: str, header: str) -> None:
        """The Task has a webhook: make sure it has a key."""
        async with self.pool.connection() as conn:
            await conn.execute(
                UPSERT,
                {
                    "namespace": namespace,
                    "task": task,
                    "task_uid": task_uid,
                    "key": _new_key(),
                    "header": header,
                },
            )

    async def drop(self, namespace: str, task: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(DROP, (namespace, task))

    async def drop_stale(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(DROP_STALE)

    async def get(self, namespace: str, task: str) -> WebhookKey | None:
        async with self.pool.connection() as conn:
            row = await fetch_one(conn, WebhookKey, GET, (namespace, task))
        return None if row is None else _bytes(row)

    async def due(self, every: dt.timedelta, limit: int) -> list[WebhookKey]:
        """Keys whose Secret is to be written, or checked again."""
        async with self.pool.connection() as conn:
            return [_bytes(r) for r in await fetch_all(conn, WebhookKey, DUE, (every, limit))]

    async def written(self, webhook: WebhookKey, secret_uid: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(WRITTEN, (secret_uid, webhook.namespace, webhook.task, webhook.key))

    async def rotate(self, webhook: WebhookKey) -> WebhookKey | None:
        """A new key in place of `webhook.key`; None if it changed meanwhile."""
        new = _new_key()
        async with transaction(self.pool) as conn:
            cursor = await conn.execute(ROTATE, (new, webhook.namespace, webhook.task, webhook.key))
            if cursor.rowcount != 1:
                return None
        return WebhookKey(
            webhook.namespace,
            webhook.task,
            webhook.task_uid,
            new,
            webhook.idempotency_header,
            webhook.secret_uid,
        )


def _bytes(row: WebhookKey) -> WebhookKey:
    # bytea arrives as memoryview.
    return WebhookKey(
        row.namespace,
        row.task,
        row.task_uid,
        bytes(row.key),
        row.idempotency_header,
        row.secret_uid,
    )
