"""The operator's hot queries at scale (issue 18, P4): with 10,000 runs recorded (most
finished, a backlog queued or delayed, a few hundred running) every query the reconcile
loop, admission, the publisher and the run API issue again and again is planned with an
index, never with a sequential scan of `drover_runs` or `drover_attempts`.

The plans come from Postgres itself (`EXPLAIN (FORMAT JSON)` after `ANALYZE`), for the
statements the store runs, with the parameters it passes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from drover_operator.store import Store
from drover_operator.store.admission import (
    ACTIVE_USAGE,
    DUE_QUEUES,
    NEXT_ELIGIBLE,
    SET_WAIT,
    WAITING_RUNS,
)
from drover_operator.store.attempts import (
    DUE_DEADLINES,
    DUE_PENDING,
    DUE_STALLS,
    HELD_SLOTS,
    PODS_TO_CREATE,
    PODS_TO_STOP,
)
from drover_operator.store.history import RUNS_WITH_PODS_LEFT
from drover_operator.store.runapi import API_ATTEMPT, HEARTBEAT
from drover_operator.store.runs import CLAIM_UNPUSHED, EXPIRE_RUNS, PUSH_LEASE, UNFINISHED_BEFORE
from drover_operator.store.runviews import QUEUE_POSITION, _list_query
from tests.store.test_transitions import Runner

RUNS = 10_000
BIG_TABLES = frozenset({"drover_runs", "drover_attempts"})

# 10,000 runs over 4 namespaces and 5 Tasks each: 7,000 finished (one ended attempt each,
# pod removed), 2,000 queued with a delay, 500 queued and eligible (the backlog behind a
# limit), 200 retrying, 300 running with an active SDK attempt (heartbeats) whose status
# is behind (the publisher's work).
FILL = """
INSERT INTO drover_tasks (namespace, name, uid, generation, spec)
SELECT 'ns' || n, 't' || t, gen_random_uuid(), 1, '{"image": "busybox"}'::jsonb
FROM generate_series(0, 3) n, generate_series(0, 4) t;

INSERT INTO drover_runs (id, namespace, name, task, phase, attempt, execution, created_at,
                         started_at, finished_at, eligible_at, expires_at, version,
                         pushed_version)
SELECT gen_random_uuid(), 'ns' || (i % 4), 'run-' || i, 't' || (i % 5),
       CASE WHEN i < 7000 THEN 'Succeeded' WHEN i < 9000 THEN 'Queued'
            WHEN i < 9500 THEN 'Queued' WHEN i < 9700 THEN 'Retrying' ELSE 'Running' END,
       CASE WHEN i < 7000 OR i >= 9500 THEN 1 ELSE 0 END,
       CASE WHEN i < 7000 OR i >= 9500 THEN 1 ELSE 0 END,
       now() - (10000 - i) * interval '1 second',
       CASE WHEN i < 7000 OR i >= 9700 THEN now() - (10000 - i) * interval '1 second' END,
       CASE WHEN i < 7000 THEN now() - (9990 - i) * interval '1 second' END,
       CASE WHEN i >= 7000 AND i < 9000 THEN now() + interval '1 hour'
            WHEN i >= 9500 AND i < 9700 THEN now() + interval '10 seconds' END,
       CASE WHEN i >= 7000 AND i < 9000 THEN now() + interval '2 hours' END,
       CASE WHEN i >= 9700 THEN 3 ELSE 2 END, 2
FROM generate_series(0, 9999) i;

INSERT INTO drover_attempts (run_id, number, try_number, namespace, task, pod_name, state,
                             active, pod_created, pod_removed, admitted_at, started_at,
                             finished_at, task_spec, heartbeat_timeout, heartbeat_at,
                             token_hash)
SELECT id, 1, 1, namespace, task, name || '-a1',
       CASE phase WHEN 'Retrying' THEN 'Failed' ELSE phase END,
       phase = 'Running', true, phase = 'Succeeded', created_at, created_at,
       CASE WHEN phase <> 'Running' THEN coalesce(finished_at, created_at) END,
       '{"image": "busybox"}'::jsonb, interval '30 seconds', now(), md5(id::text)
FROM drover_runs WHERE attempt = 1;

ANALYZE;
"""


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, relation) of every scan in a plan tree."""
    found = []
    if "Relation Name" in plan:
        found.append((str(plan["Node Type"]), str(plan["Relation Name"])))
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


async def _explain(store: Store, sql: str, params: Any) -> dict[str, Any]:
    async with store.pool.connection() as conn:
        cursor = await conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        row = await cursor.fetchone()
        assert row is not None
        document = next(iter(row.values()))
        plans = json.loads(document) if isinstance(document, str) else document
        plan: dict[str, Any] = plans[0]["Plan"]
        return plan


async def _ids(store: Store, phase: str) -> list[dict[str, Any]]:
    async with store.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT id, namespace, task, created_at, seq FROM drover_runs WHERE phase = %s"
            " ORDER BY seq DESC LIMIT 1",
            (phase,),
        )
        return list(await cursor.fetchall())


def _hot_queries(queued: dict[str, Any], running: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each hot statement with the parameters the store passes, named for the report."""
    ns, task = queued["namespace"], queued["task"]
    now = dt.datetime.now(dt.UTC)
    return {
        "admission: waiting runs (candidates)": (WAITING_RUNS, (ns, task, 50, 0)),
        "admission: active usage": (ACTIVE_USAGE, (ns, task)),
        "admission: wait reasons": (
            SET_WAIT,
            {
                "namespace": ns,
                "task": task,
                "reason": "ConcurrencyLimit",
                "message": "m",
                "ids": None,
                "except": [],
            },
        ),
        "loop: queues with due runs": (DUE_QUEUES, None),
        "loop: next eligible": (NEXT_ELIGIBLE, None),
        "loop: pods to create": (PODS_TO_CREATE, (50,)),
        "loop: pods to stop": (PODS_TO_STOP, (50,)),
        "loop: expired runs": (EXPIRE_RUNS, None),
        "loop: pending timeouts": (DUE_PENDING, (50,)),
        "loop: stalls (heartbeats)": (DUE_STALLS, (50,)),
        "loop: maxDuration deadlines": (DUE_DEADLINES, (50,)),
        "history: pods left": (RUNS_WITH_PODS_LEFT, ("1 minute", 50)),
        "slots held for gone pods (slotRelease: PodGone)": (HELD_SLOTS, ("10 seconds", 50)),
        "vanished: unfinished runs, all namespaces": (
            UNFINISHED_BEFORE,
            {"before": now, "namespaces": None},
        ),
        "vanished: unfinished runs, some namespaces": (
            UNFINISHED_BEFORE,
            {"before": now, "namespaces": ["ns1", "ns2"]},
        ),
        "publisher: claim unpushed": (CLAIM_UNPUSHED, {"lease": PUSH_LEASE, "limit": 100}),
        "run API: attempt (credential check)": (API_ATTEMPT, (running["id"], 1)),
        "run API: heartbeat": (HEARTBEAT, (running["id"], 1)),
        "history API: keyset page, one namespace": (
            _list_query(
                ["r.namespace = %(namespace)s", "(r.created_at, r.id) < (%(at)s, %(id)s::uuid)"]
            ),
            {"namespace": ns, "at": queued["created_at"], "id": queued["id"], "limit": 51},
        ),
        "history API: keyset page, one Task": (
            _list_query(
                [
                    "r.namespace = %(namespace)s",
                    "r.task = %(task)s",
                    "(r.created_at, r.id) < (%(at)s, %(id)s::uuid)",
                ]
            ),
            {
                "namespace": ns,
                "task": task,
                "at": queued["created_at"],
                "id": queued["id"],
                "limit": 51,
            },
        ),
        "run view: queue position": (
            QUEUE_POSITION,
            {
                "namespace": ns,
                "task": task,
                "priority": 0,
                "created_at": queued["created_at"],
                "seq": queued["seq"],
            },
        ),
    }


def test_hot_queries_use_indexes_over_ten_thousand_runs(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> dict[str, list[tuple[str, str]]]:
        async with store.pool.connection() as conn:
            await conn.execute(FILL.encode())
            cursor = await conn.execute("SELECT count(*) AS n FROM drover_runs")
            counted = await cursor.fetchone()
            assert counted is not None and counted["n"] == RUNS
        [queued] = await _ids(store, "Queued")
        [running] = await _ids(store, "Running")
        return {
            name: _scans(await _explain(store, sql, params))
            for name, (sql, params) in _hot_queries(queued, running).items()
        }

    scans = with_store(scenario)
    for name, found in scans.items():
        print(f"{name}: {found}")
    sequential = {
        name: [
            relation for node, relation in found if node == "Seq Scan" and relation in BIG_TABLES
        ]
        for name, found in scans.items()
    }
    assert {name: tables for name, tables in sequential.items() if tables} == {}
    # Each query reads the big tables at all (a plan without them would prove nothing).
    for name, found in scans.items():
        assert any(relation in BIG_TABLES for _, relation in found), (name, found)
