"""The HTTP server: run API, `/healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`."""

from __future__ import annotations

import logging

from aiohttp import web
from lightkube import AsyncClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from drover.protocol.wire import MAX_REQUEST_BYTES
from drover_operator.api import reads, runs
from drover_operator.api.auth import KUBE
from drover_operator.api.errors import problems
from drover_operator.api.openapi import document
from drover_operator.api.state import LIFECYCLE, STORE
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.store import Store
from drover_operator.telemetry import metrics as drover_metrics

log = logging.getLogger(__name__)


def make_app(store: Store, lifecycle: RunLifecycle, kube: AsyncClient) -> web.Application:
    app = web.Application(
        middlewares=[drover_metrics.api_latency, problems], client_max_size=MAX_REQUEST_BYTES
    )
    app[STORE] = store
    app[LIFECYCLE] = lifecycle
    app[KUBE] = kube

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        try:
            await store.ping()
        except Exception as exc:  # any failure means: do not send traffic here
            # The reason goes to the log, not to whoever asks.
            log.warning("not ready: database unavailable: %s", exc)
            return web.Response(status=503, text="database unavailable")
        return web.Response(text="ok")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document())

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    runs.add_routes(app)
    reads.add_routes(app)
    return app


async def serve(
    store: Store, lifecycle: RunLifecycle, kube: AsyncClient, host: str, port: int
) -> web.AppRunner:
    runner = web.AppRunner(make_app(store, lifecycle, kube), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("API listening on %s:%d", host, port)
    return runner
