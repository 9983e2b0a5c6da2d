"""The HTTP server: run API, `/healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`."""

from __future__ import annotations

import logging

from aiohttp import web
from lightkube import AsyncClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from drover._wire import MAX_REQUEST_BYTES
from drover_operator import metrics as drover_metrics
from drover_operator.api import reads, runs
from drover_operator.api.errors import problems
from drover_operator.api.openapi import document
from drover_operator.store.runs import Store

log = logging.getLogger(__name__)


def make_app(store: Store, kube: AsyncClient) -> web.Application:
    app = web.Application(
        middlewares=[drover_metrics.api_latency, problems], client_max_size=MAX_REQUEST_BYTES
    )
    app[runs.STORE] = store
    app[reads.KUBE] = kube

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        try:
            await store.fetch("SELECT 1")
        except Exception as exc:  # any failure means: do not send traffic here
            return web.Response(status=503, text=f"database unavailable: {exc}")
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


async def serve(store: Store, kube: AsyncClient, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(store, kube), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("API listening on %s:%d", host, port)
    return runner
