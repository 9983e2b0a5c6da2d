"""The kubelet's log endpoint, so `kubectl logs` works through the API server's node proxy.

The API server connects to the Node's InternalIP on `status.daemonEndpoints.kubeletEndpoint`
with its kubelet client certificate and asks for
`/containerLogs/{namespace}/{pod}/{container}?follow=&previous=&tailLines=&timestamps=&...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from drover_localcluster.nodeagent.podworker import PodWorker

_FOLLOW_POLL_S = 0.5


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _render(line: str, timestamps: bool) -> str:
    stamp, _, rest = line.partition(" ")
    _stream, _, text = rest.partition(" ")
    return f"{stamp} {text}\n" if timestamps else f"{text}\n"


def _since(request: web.Request) -> dt.datetime | None:
    if "sinceTime" in request.query:
        return _parse_time(request.query["sinceTime"])
    if "sinceSeconds" in request.query:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(request.query["sinceSeconds"]))
    return None


def _keep(line: str, since: dt.datetime | None) -> bool:
    return since is None or _parse_time(line.split(" ", 1)[0]) >= since


async def _lines(path: Path, worker: PodWorker, follow: bool, container: str) -> AsyncIterator[str]:
    """Lines of a log file; with `follow`, until the container stops and the file is drained."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        pending = ""
        while True:
            chunk = handle.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    yield pending.rstrip("\n")
                    pending = ""
                continue
            record = worker.record(container)
            if not follow or record is None or not record.running or worker.gone:
                return
            async with worker.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.changed.wait(), timeout=_FOLLOW_POLL_S)


def make_app(find: Callable[[str, str], PodWorker | None]) -> web.Application:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod, container = request.match_info["pod"], request.match_info["container"]
        worker = find(namespace, pod)
        record = worker.record(container) if worker else None
        if worker is None or record is None:
            raise web.HTTPNotFound(text=f'container "{container}" in pod "{pod}" not found\n')
        files = record.log_files
        previous = request.query.get("previous") == "true"
        if previous:
            if len(files) < 2:
                raise web.HTTPBadRequest(
                    text=f'previous terminated container "{container}" in pod "{pod}" not found\n'
                )
            path, follow = Path(files[-2]), False
        else:
            if not files or not Path(files[-1]).exists():
                raise web.HTTPBadRequest(
                    text=f'container "{container}" in pod "{pod}" is waiting to start: '
                    f"{record.waiting_reason or 'ContainerCreating'}\n"
                )
            path, follow = Path(files[-1]), request.query.get("follow") == "true"
        timestamps = request.query.get("timestamps") == "true"
        since = _since(request)
        tail = int(request.query["tailLines"]) if "tailLines" in request.query else None
        limit = int(request.query["limitBytes"]) if "limitBytes" in request.query else None

        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        sent = 0
        lines = _lines(path, worker, follow, container)
        if tail is not None:
            # The tail of what is there now; anything later is streamed when following.
            backlog: deque[str] = deque(maxlen=max(tail, 0))
            with path.open(encoding="utf-8", errors="replace") as handle:
                backlog.extend(line.rstrip("\n") for line in handle if line.endswith("\n"))
                offset = handle.tell()
            head = list(backlog)
            lines = _skip_to(path, offset, worker, follow, container)
        else:
            head = []
        async for line in _chain(head, lines):
            if not _keep(line, since):
                continue
            data = _render(line, timestamps).encode()
            if limit is not None and sent + len(data) > limit:
                data = data[: limit - sent]
            await response.write(data)
            sent += len(data)
            if limit is not None and sent >= limit:
                break
        await response.write_eof()
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    app.router.add_get("/healthz", healthz)
    return app


async def _chain(head: list[str], rest: AsyncIterator[str]) -> AsyncIterator[str]:
    for line in head:
        yield line
    async for line in rest:
        yield line


async def _skip_to(
    path: Path, offset: int, worker: PodWorker, follow: bool, container: str
) -> AsyncIterator[str]:
    if not follow:
        return
    consumed = 0
    async for line in _lines(path, worker, follow, container):
        consumed += len(line.encode()) + 1
        if consumed > offset:
            yield line


def ssl_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """Serve with the node's certificate; only clients signed by the cluster CA get in."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context
