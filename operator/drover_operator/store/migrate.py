"""Numbered SQL migrations, applied at start-up under an advisory lock (so two replicas
starting together apply each migration once)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from drover_operator.errors import MigrationError

_LOCK_KEY = 0x64726F766572  # "drover"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """All migrations shipped with the operator, in order."""
    found = []
    for entry in resources.files("drover_operator.store").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps: {found}")
    return found


def fresh_schema() -> str:
    return resources.files("drover_operator.store").joinpath("schema.sql").read_text()


async def migrate(dsn: str) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS drover_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM drover_schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for migration in migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO drover_schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
