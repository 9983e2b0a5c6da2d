"""Live updates as server-sent events, from Postgres LISTEN/NOTIFY (`drover_events`): one
listening connection per operator process, fanned out to the viewers' streams.

- `runs-events?namespace=`: `runs` whenever a run of the namespace (or any, for a viewer who
  may list them all) is recorded or changes phase; the runs page then reloads its table.
- `run-events?namespace=&name=&after=ID`: `logs` with the run's new lines (HTML),
  `run` when its phase changes (the page reloads its summary).

A stream is authorized once, as the page it belongs to. Notifications are hints: a stream
reads what changed from the store, so a lost one only delays an update until the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from drover_operator.api.auth import authorize
from drover_operator.api.dashboard.pages import _run
from drover_operator.api.dashboard.render import ENV, SECURITY_HEADERS, page
from drover_operator.api.state import STORE
from drover_operator.store import Store

log = logging.getLogger(__name__)

#: Comment lines keep idle streams open through proxies and notice gone viewers.
KEEPALIVE_SECONDS = 15.0
#: Changes within this long become one event (a burst of runs, a chatty task's lines).
COALESCE_SECONDS = 0.25
#: Notifications a slow stream may have pending before it just reloads everything.
_QUEUE = 1000
_OVERFLOW = "*"
#: Tells streams that the server shuts down (browsers reconnect, to another replica).
_CLOSING = "closing"


class EventHub:
    """Fans the store's notifications out to subscribers; listens only while someone does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queues: set[asyncio.Queue[str]] = set()
        self._stop = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[str]:
        if self._listener is None or self._listener.done():
            self._stop.clear()
            self._listener = asyncio.create_task(
                self.store.follow_events(self._publish, self._stop)
            )
        queue: asyncio.Queue[str] = asyncio.Queue(_QUEUE)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._queues.discard(queue)

    def _publish(self, payload: str) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(_OVERFLOW)

    async def close(self) -> None:
        """End every stream (a graceful shutdown waits for open requests) and the LISTEN."""
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(_CLOSING)
        self._stop.set()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener


HUB: web.AppKey[EventHub] = web.AppKey("dashboard_events", EventHub)


async def _drain(queue: asyncio.Queue[str]) -> list[str] | None:
    """The notifications of the next burst, or None after a quiet keep-alive interval."""
    try:
        first = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
    except TimeoutError:
        return None
    await asyncio.sleep(COALESCE_SECONDS)
    burst = [first]
    while not queue.empty():
        burst.append(queue.get_nowait())
    return burst


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream",
            "X-Accel-Buffering": "no",  # nginx (an Ingress): do not hold events back
        }
    )
    await response.prepare(request)
    await response.write(b": connected\n\n")
    return response


def _event(name: str, data: str, event_id: int | None = None) -> bytes:
    lines = [f"event: {name}"] + [f"data: {line}" for line in data.splitlines() or [""]]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode()


@page
async def runs_events(request: web.Request) -> web.StreamResponse:
    namespace = request.query.get("namespace") or None
    await authorize(request, namespace, "list")
    hub = request.app[HUB]
    queue = hub.subscribe()
    try:
        response = await _open(request)
        # Whatever changed between the page and this subscription: reload once.
        await response.write(_event("runs", "changed"))
        while True:
            burst = await _drain(queue)
            if burst is None:
                await response.write(b": keep-alive\n\n")
                continue
            if _CLOSING in burst:
                return response
            if any(_concerns(p, namespace) for p in burst):
                await response.write(_event("runs", "changed"))
    finally:
        hub.unsubscribe(queue)


def _concerns(payload: str, namespace: str | None) -> bool:
    kind, _, rest = payload.partition(" ")
    if payload == _OVERFLOW:
        return True
    return kind == "run" and (namespace is None or rest.split(" ")[0] == namespace)


@page
async def run_events(request: web.Request) -> web.StreamResponse:
    run = await _run(request)
    store = request.app[STORE]
    last = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    after = int(last) if last.isdigit() else 0
    hub = request.app[HUB]
    queue = hub.subscribe()
    lines_template = ENV.get_template("log_lines.html")
    try:
        response = await _open(request)
        # Whatever changed between the page and this subscription: reload once.
        await response.write(_event("run", "changed"))
        new_lines = True  # also those written before this stream began
        while True:
            if new_lines:
                lines = await store.runapi.logs(run.id, after, 1000)
                if lines:
                    after = lines[-1].id
                    html = await lines_template.render_async(lines=lines)
                    await response.write(_event("logs", html, after))
                    continue
                new_lines = False
            burst = await _drain(queue)
            if burst is None:
                await response.write(b": keep-alive\n\n")
                continue
            if _CLOSING in burst:
                return response
            new_lines = _OVERFLOW in burst or f"logs {run.id}" in burst
            if _OVERFLOW in burst or f"run {run.namespace} {run.id}" in burst:
                await response.write(_event("run", "changed"))
    finally:
        hub.unsubscribe(queue)


def install(app: web.Application) -> None:
    hub = EventHub(app[STORE])
    app[HUB] = hub

    async def close(_: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(close)


def add_routes(app: web.Application, root: str) -> None:
    app.router.add_get(f"{root}/runs-events", runs_events)
    app.router.add_get(f"{root}/run-events", run_events)
