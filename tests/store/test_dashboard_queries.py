"""What the dashboard reads, on real Postgres: its runs page over 10,000 runs in history is
served from the history indexes (the first page, a filtered page, a search), measured through
the dashboard's own handler; and the live updates' notifications (a run recorded or changing
phase, log lines written) arrive on `drover_events`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import statistics
import time
import uuid
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from drover.protocol.wire import LogLine
from drover_operator.api import dashboard
from drover_operator.api.auth import AUTH, Authenticator, Caller
from drover_operator.api.state import STORE
from drover_operator.store import Store
from tests.store.test_overviews import _insert_runs, _plan
from tests.store.test_transitions import Runner, add_run, add_task

NOW = dt.datetime.now(dt.UTC)
RUNS = 10_000
PAGE = "ORDER BY r.created_at DESC, r.id DESC LIMIT 51"


class _Anyone(Authenticator):
    """Lets every request through: authorization is proven end to end (tests/e2e/
    test_dashboard.py); here only the server's own time is measured."""

    def __init__(self) -> None:
        pass

    async def identify(self, request: web.Request) -> Caller:
        return Caller(user="measure")

    async def allowed(self, *_: Any, **__: Any) -> bool:
        return True


async def _history(store: Store) -> None:
    await _insert_runs(
        store,
        [
            (
                f"ns{i % 4}",
                f"run-{i}",
                "rare" if i % 1000 == 0 else f"t{i % 7}",
                "Failed" if i % 50 == 0 else "Succeeded",
                NOW - dt.timedelta(seconds=i),
                NOW - dt.timedelta(seconds=i),
                NOW - dt.timedelta(seconds=i - 1),
                None,
            )
            for i in range(RUNS)
        ],
    )


async def _timed(client: TestClient[Any, Any], path: str, times: int = 20) -> list[float]:
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        response = await client.get(path)
        body = await response.text()
        taken.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, body
        assert body.count('class="run"') == 50 or "rare" in path, body[:2000]
    return taken


def test_the_runs_page_over_ten_thousand_runs_uses_the_history_indexes(
    with_store: Runner[Any],
) -> None:
    async def scenario(store: Store) -> dict[str, Any]:
        await _history(store)
        plans = {
            "namespace": await _plan(
                store, f"SELECT * FROM drover_runs r WHERE r.namespace = 'ns1' {PAGE}"
            ),
            "task": await _plan(
                store,
                f"SELECT * FROM drover_runs r WHERE r.namespace = 'ns1' AND r.task = 'rare' {PAGE}",
            ),
            "everywhere": await _plan(store, f"SELECT * FROM drover_runs r WHERE true {PAGE}"),
        }
        app = web.Application()
        app[STORE] = store
        app[AUTH] = _Anyone()
        dashboard.add_routes(app)
        async with TestClient(TestServer(app)) as client:
            timings = {
                "first page, one namespace": await _timed(client, "/ui/runs?namespace=ns1"),
                "first page, every namespace": await _timed(client, "/ui/runs"),
                "a phase, one namespace": await _timed(
                    client, "/ui/runs-table?namespace=ns2&phase=Succeeded"
                ),
                "a search by name": await _timed(
                    client, "/ui/runs-table?namespace=ns3&search=run-"
                ),
                "a rare Task": await _timed(client, "/ui/runs-table?namespace=ns0&task=rare"),
            }
        return {"plans": plans, "timings": timings}

    found = with_store(scenario)
    plans = found["plans"]
    assert "drover_runs_history" in plans["namespace"] and "Seq Scan" not in plans["namespace"]
    assert "drover_runs_history_by_task" in plans["task"] and "Seq Scan" not in plans["task"]
    assert "drover_runs_history_all" in plans["everywhere"]
    for what, taken in found["timings"].items():
        # Figures for the record (docs/dashboard.md); no wall-clock limit in a test.
        print(
            f"dashboard {what} over {RUNS} runs: median {statistics.median(taken):.1f} ms,"
            f" max {max(taken):.1f} ms"
        )


def test_runs_and_log_lines_notify_the_dashboard(with_store: Runner[Any]) -> None:
    async def scenario(store: Store) -> list[str]:
        heard: list[str] = []
        arrived = asyncio.Event()

        def hear(payload: str) -> None:
            heard.append(payload)
            arrived.set()

        async def next_notification() -> None:
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.5)

        stop = asyncio.Event()
        listening = asyncio.create_task(store.follow_events(hear, stop))
        await add_task(store)
        # LISTEN is in place once a notification sent after it arrives.
        while not heard:
            await add_run(store, f"probe-{uuid.uuid4().hex[:6]}")
            await next_notification()
        heard.clear()
        run_id = await add_run(store, "watched")
        async with store.pool.connection() as conn:
            await conn.execute("UPDATE drover_runs SET phase = 'Running' WHERE id = %s", (run_id,))
            await conn.execute("UPDATE drover_runs SET priority = 5 WHERE id = %s", (run_id,))
        await store.runapi.append_logs(
            run_id, 1, [LogLine(time=NOW, level="INFO", logger="t", message=m) for m in "ab"]
        )
        expected = {f"run ns {run_id}", f"logs {run_id}"}
        while not expected <= set(heard):
            await next_notification()
        stop.set()
        listening.cancel()
        return heard

    heard = with_store(scenario)
    run_id = heard[0].split()[-1]
    # Recorded, then Running; not for an update that leaves the phase alone. One per batch.
    assert heard.count(f"run ns {run_id}") == 2, heard
    assert heard.count(f"logs {run_id}") >= 1, heard


def test_open_streams_end_cleanly_when_the_server_shuts_down(with_store: Runner[Any]) -> None:
    """A graceful shutdown waits for open requests: the live streams end themselves (their
    chunked bodies finish) instead of holding the operator until it is killed."""

    async def scenario(store: Store) -> tuple[bytes, bytes]:
        app = web.Application()
        app[STORE] = store
        app[AUTH] = _Anyone()
        dashboard.add_routes(app)
        server = TestServer(app)
        await server.start_server()
        async with ClientSession() as session:
            response = await session.get(server.make_url("/ui/runs-events?namespace=ns"))
            opened = await response.content.readuntil(b"\n\n")
            closing = asyncio.create_task(server.close())
            rest = await response.content.read()  # raises if the stream was cut, not ended
            await closing
        return opened, rest

    opened, rest = with_store(scenario)
    assert opened == b": connected\n\n"
    assert rest.startswith(b"event: runs\n")  # the update every stream starts with
