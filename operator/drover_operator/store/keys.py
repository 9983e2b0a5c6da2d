"""Keys shared by all replicas (the HMAC key that derives attempt tokens)."""

from __future__ import annotations

import secrets

from drover_operator.store.db import Pool, fetch_value

INSERT_KEY = "INSERT INTO drover_keys (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING"

GET_KEY = "SELECT value FROM drover_keys WHERE name = %s"


class KeyStore:
    """The `drover_keys` table: secrets every replica must agree on."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def get_or_create(self, name: str, size: int = 32) -> bytes:
        """The key `name`, created at random by whichever replica asks first."""
        async with self.pool.connection() as conn:
            await conn.execute(INSERT_KEY, (name, secrets.token_bytes(size)))
            value = await fetch_value(conn, GET_KEY, (name,))
        assert value is not None
        return bytes(value)
