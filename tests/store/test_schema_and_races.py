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
from drover_operator.domain.records import RunRecord
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.store import Store
from drover_operator.store.admission import Admitted
from drover_operator.store.db import fetch_one, open_pool, transaction
from drover_operator.store.migrate import fresh_schema, migrate
from drover_operator.store.runs import LOCK_RUN, NewRun, _cancel


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


def test_a_run_canceled_while_admission_reads_it_is_never_started(
    new_database: tuple[str, str],
) -> None:
    """Admission reads its candidates without locking them. A cancel that commits after that
    read, while admission waits for the run's row, must still win: the run stays Canceled and
    no attempt (no pod) is made. The Helm test saw the opposite: a run canceled while Queued
    was started a moment later, and ran on."""
    _, dsn = new_database

    async def scenario() -> tuple[list[Admitted], str, int]:
        await migrate(dsn)
        pool = await open_pool(dsn, 4)
        store = Store(pool)
        spec = {"image": "x", "command": ["true"], "concurrency": {"limit": 5}}
        await store.tasks.upsert("ns", "t", str(uuid.uuid4()), 1, spec, None)
        run_id = str(uuid.uuid4())
        await store.runs.record(
            NewRun(id=run_id, namespace="ns", name="r", task="t", generation=1,
                   created_at=dt.datetime.now(dt.UTC))
        )  # fmt: skip
        policy = LifecyclePolicy(dt.timedelta(minutes=10), None)
        async with transaction(pool) as conn:
            # What `runs.close` does, held open until admission has read the run as Queued
            # and is waiting for its row.
            run = await fetch_one(conn, RunRecord, LOCK_RUN, (run_id,))
            assert run is not None
            await _cancel(conn, run, "Canceled", "spec.cancel is true", deleted=False)
            admission = asyncio.create_task(store.admission.admit("ns", "t", policy))
            async with pool.connection() as watcher:
                while True:
                    cursor = await watcher.execute(
                        "SELECT count(*) AS n FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        " AND query LIKE '%%UPDATE drover_runs%%'"
                    )
                    if ((await cursor.fetchone()) or {"n": 0})["n"]:
                        break
                    assert not admission.done(), admission
                    await asyncio.sleep(0.01)
        admitted = await admission
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT phase FROM drover_runs WHERE id = %s", (run_id,))
            phase = ((await cursor.fetchone()) or {"phase": ""})["phase"]
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM drover_attempts WHERE run_id = %s", (run_id,)
            )
            attempts = ((await cursor.fetchone()) or {"n": -1})["n"]
        await pool.close()
        return admitted, phase, attempts

    admitted, phase, attempts = asyncio.run(scenario())
    assert (admitted, phase, attempts) == ([], "Canceled", 0)
