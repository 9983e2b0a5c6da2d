"""`drover-operator run`, wired: the store, the lifecycle, the converger, the API and the
loops, started in order and stopped together."""

from __future__ import annotations

import asyncio
import logging
import signal

import kopf
from lightkube import AsyncClient

from drover_operator import handlers
from drover_operator.api.app import Listen, make_app, serve
from drover_operator.api.auth import Authenticator, FrontProxy
from drover_operator.api.limits import RateLimits
from drover_operator.converge import Converger
from drover_operator.converge.peering import Peering, ensure_peering
from drover_operator.domain.tokens import SIGNING_KEY_NAME, WAITPOINT_KEY_NAME
from drover_operator.engine.held_slots import HeldSlots
from drover_operator.engine.history import HistoryCleaner
from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.engine.policy import LifecyclePolicy
from drover_operator.engine.runs import Engine
from drover_operator.engine.scheduler import Scheduler
from drover_operator.engine.triggers import Triggers
from drover_operator.engine.vanished import VanishedRuns
from drover_operator.engine.workflows import Workflows, WorkflowSettings
from drover_operator.kube import make_client
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store
from drover_operator.store.migrate import migrate
from drover_operator.telemetry import metrics, tracing

log = logging.getLogger("drover_operator")


async def standalone_or_peering(settings: OperatorSettings, client: AsyncClient) -> bool:
    """Whether kopf runs standalone. With peering, its object must exist or kopf stays
    paused and silent: it is created if missing; without kopf's peering CRDs the operator
    runs standalone and says so (every replica then handles events, which Drover's
    transactions make safe); when it can do neither, `PeeringError` says what to do."""
    if settings.watch.standalone:
        return True
    found = await ensure_peering(client, settings.watch.peering, settings.watch.namespaces)
    if found == Peering.UNAVAILABLE:
        log.warning(
            "kopf's peering CRDs are not installed: running standalone. Replicas then all "
            "handle events (safe, but redundant); for one active replica apply "
            "crds/kopf.dev_peerings.yaml, or set DROVER_STANDALONE=true to silence this"
        )
        return True
    log.info("peering %r: one replica's handlers are active at a time", settings.watch.peering)
    return False


async def run(settings: OperatorSettings) -> None:
    applied = await migrate(settings.database.url)
    if applied:
        log.info("applied database migrations %s", applied)
    store = await Store.open(settings.database.url, settings.database.pool_size)
    client = make_client()
    try:
        await _serve(settings, store, client)
    finally:
        await client.close()
        await store.close()
        tracing.shutdown()


async def _serve(settings: OperatorSettings, store: Store, client: AsyncClient) -> None:
    metrics.watch_pool(store.pool.get_stats)
    if tracing.configure():
        log.info("tracing: exporting spans as the OTEL_* environment configures")
    standalone = await standalone_or_peering(settings, client)
    signing_key = await store.keys.get_or_create(SIGNING_KEY_NAME)
    lifecycle = RunLifecycle(
        store, LifecyclePolicy(settings.runs.default_pending_timeout, signing_key)
    )
    converger = Converger(settings, store, client, signing_key)
    front_proxy = await FrontProxy.from_cluster(client) if settings.api.tls_cert_file else None
    auth = Authenticator(client, front_proxy, tuple(settings.api.token_audiences))
    triggers = Triggers(store, converger.taskruns)
    workflows = Workflows(
        store,
        triggers,
        WorkflowSettings(
            suspend_after=settings.runs.suspend_after,
            public_url=settings.api.token_base_url,
            token_key=await store.keys.get_or_create(WAITPOINT_KEY_NAME),
        ),
    )
    limits = RateLimits(settings.api.rate_per_source, settings.api.rate_per_target)
    app = make_app(store, lifecycle, triggers, workflows, auth, limits)
    # The API is served by every replica, whether or not its kopf handlers are active.
    api = await serve(
        app,
        Listen(
            settings.api.host,
            settings.api.port,
            settings.api.tls_port,
            settings.api.tls_cert_file,
            settings.api.tls_key_file,
        ),
    )
    engine = Engine(settings, store, lifecycle, converger)
    await engine.remember_known_runs()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assert handlers  # registered on import

    async def handlers_then_stop() -> None:
        # kopf takes over SIGTERM/SIGINT; when it stops, everything else stops with it.
        try:
            await kopf.operator(
                clusterwide=not settings.watch.namespaces,
                namespaces=settings.watch.namespaces,
                standalone=standalone,
                # Naming a peering makes it mandatory in kopf, so only name it when peering.
                peering_name=None if standalone else settings.watch.peering,
                memo=kopf.Memo(engine=engine),
                stop_flag=stop,
            )
        finally:
            stop.set()

    try:
        await asyncio.gather(
            handlers_then_stop(),
            engine.run(stop),
            Scheduler(settings, store, converger).run(stop),
            HistoryCleaner(settings, store, lifecycle, converger).run(stop),
            VanishedRuns(settings, store, lifecycle, converger, engine.wake).run(stop),
            HeldSlots(settings, store, converger, engine.wake).run(stop),
        )
    finally:
        stop.set()
        await api.cleanup()
