"""The Postgres store against a real Postgres: schema migrations, and admission that keeps
limits when many admitters race."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drover_localcluster.postgres import Postgres, _bindir
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.store import Store
from drover_operator.store.db import open_pool
from drover_operator.store.migrate import fresh_schema, migrate
from drover_operator.store.runs import NewRun


@pytest.fixture
def new_database(postgres: Postgres) -> Iterator[tuple[str, str]]:
    """Two fresh databases: (name, dsn) of the first; the second is `<name>_b`."""
    name = f"store_{secrets.token_hex(4)}"
    admin = postgres.admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"CREATE DATABASE {name}_b")
    yield name, postgres.admin_dsn(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"DROP DATABASE IF EXISTS {name}_b WITH (FORCE)")


def _dump(postgres: Postgres, database: str) -> str:
    out = subprocess.run(
        [
            str(Path(_bindir()) / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            postgres.admin_dsn(database),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # `\restrict` lines carry a random key per dump (pg_dump's guard against psql injection).
    skip = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in out.splitlines() if not line.startswith(skip))


def test_fresh_schema_equals_migrated_schema(
    postgres: Postgres, new_database: tuple[str, str]
) -> None:
    name, dsn = new_database
    asyncio.run(migrate(dsn))
    assert asyncio.run(migrate(dsn)) == []  # idempotent
    with psycopg.connect(postgres.admin_dsn(f"{name}_b"), autocommit=True) as conn:
        conn.execute(fresh_schema().encode())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE drover_schema_migrations")
    assert _dump(postgres, name) == _dump(postgres, f"{name}_b")


def test_racing_admitters_never_exceed_the_limit(new_database: tuple[str, str]) -> None:
    _, dsn = new_database

    async def scenario() -> tuple[int, int]:
        await migrate(dsn)
        pools = [await open_pool(dsn, 4) for _ in range(4)]
        stores = [Store(p) for p in pools]
        await stores[0].tasks.upsert(
            "ns",
            "t",
            str(uuid.uuid4()),
            1,
            {"image": "x", "command": ["true"], "concurrency": {"limit": 5}},
            None,
        )
        now = dt.datetime.now(dt.UTC)
        for i in range(100):
            await stores[0].runs.record(
                NewRun(
                    id=str(uuid.uuid4()),
                    namespace="ns",
                    name=f"r{i}",
                    task="t",
                    generation=1,
                    created_at=now + dt.timedelta(microseconds=i),
                )
            )
        policy = LifecyclePolicy(dt.timedelta(minutes=10), None)
        rounds = await asyncio.gather(
            *(s.admission.admit("ns", "t", policy) for s in stores for _ in range(5))
        )
        admitted = sum(len(r) for r in rounds)
        async with pools[0].connection() as conn:
            cursor = await conn.execute("SELECT count(*) AS n FROM drover_attempts WHERE active")
            active = (await cursor.fetchone() or {"n": -1})["n"]
        for pool in pools:
            await pool.close()
        return admitted, active

    admitted, active = asyncio.run(scenario())
    assert admitted == 5 and active == 5
