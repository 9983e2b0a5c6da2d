"""The runner as a container's PID 1 (its own PID namespace, as inside a task image) stops on
SIGTERM — a deleted pod or a canceled run — instead of ignoring it, as PID 1 ignores signals
it does not handle, and waiting for the kill at the end of the grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from drover.protocol.wire import RunContext
from tests.conftest import REPO_ROOT, wait_for

pytestmark = pytest.mark.e2e

RUN_ID = "6f0c1c7e-0b7e-4f55-9a55-1d3c5a0e2b11"


@pytest.fixture
def run_api() -> Iterator[tuple[str, list[str]]]:
    """The run API's answers for one attempt that waits forever: (its URL, requests seen)."""
    seen: list[str] = []
    context = RunContext.model_validate(
        {
            "runId": RUN_ID,
            "name": "r",
            "namespace": "ns",
            "task": "t",
            "attempt": 1,
            "maxAttempts": 1,
            "heartbeatSeconds": 30,
            "payload": {},
        }
    )

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path.endswith("/context"):
            return web.json_response(text=context.model_dump_json(by_alias=True))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["port"] = runner.addresses[0][1]
        holder["loop"] = loop
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    yield f"http://127.0.0.1:{holder['port']}", seen
    holder["loop"].call_soon_threadsafe(holder["loop"].stop)


def test_the_runner_as_pid_1_stops_on_sigterm(run_api: tuple[str, list[str]]) -> None:
    url, seen = run_api
    env = {
        **os.environ,
        "DROVER_API_URL": url,
        "DROVER_RUN_ID": RUN_ID,
        "DROVER_TOKEN": "t",
        "DROVER_ENTRYPOINT": "tests.e2e.sdk_tasks:waits",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "drover.runner"],
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        wait_for(lambda: any(p.endswith("/context") for p in seen), what="the runner started")

        def pid_1() -> int | None:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            return int(children[0]) if children else None

        inner = wait_for(pid_1, what="the runner, PID 1 of its namespace")
        status = Path(f"/proc/{inner}/status").read_text().splitlines()
        [nspid] = [line.split()[1:] for line in status if line.startswith("NSpid:")]
        assert nspid[-1] == "1"  # PID 1 in its own namespace
        os.kill(inner, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
