"""`drover-operator run`: migrate the database, then run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import kopf
from pydantic import ValidationError

from drover._logs import JsonFormatter
from drover_operator import handlers, metrics, tracing
from drover_operator.api.app import serve
from drover_operator.converge import Converger
from drover_operator.engine import Engine
from drover_operator.history import HistoryCleaner
from drover_operator.kube import make_client
from drover_operator.scheduler import Scheduler
from drover_operator.settings import Settings
from drover_operator.store.db import open_pool
from drover_operator.store.migrate import migrate
from drover_operator.store.runs import Store
from drover_operator.tokens import signing_key

log = logging.getLogger("drover_operator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drover-operator")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator (settings: DROVER_* env vars)")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        default=None,
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        default=None,
        help="no peering: for a single replica (DROVER_STANDALONE)",
    )
    run.add_argument("--peering", default=None, help="kopf peering name (DROVER_PEERING)")
    run.add_argument("--database-url", default=None, help="Postgres DSN (DROVER_DATABASE_URL)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"DROVER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"drover-operator: invalid settings: {problems}") from exc


async def run(settings: Settings) -> None:
    applied = await migrate(settings.database_url)
    if applied:
        log.info("applied database migrations %s", applied)
    pool = await open_pool(settings.database_url, settings.database_pool_size)
    metrics.watch_pool(pool.get_stats)
    if tracing.configure():
        log.info("tracing: exporting spans as the OTEL_* environment configures")
    client = make_client()
    store = Store(pool, await signing_key(pool))
    # The API is served by every replica, whether or not its kopf handlers are active.
    api = await serve(store, client, settings.api_host, settings.api_port)
    engine = Engine(settings, store, Converger(settings, store, client))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assert handlers  # registered on import

    async def handlers_then_stop() -> None:
        # kopf takes over SIGTERM/SIGINT; when it stops, everything else stops with it.
        try:
            await kopf.operator(
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                standalone=settings.standalone,
                # Naming a peering makes it mandatory in kopf, so only name it when peering.
                peering_name=None if settings.standalone else settings.peering,
                memo=kopf.Memo(engine=engine),
                stop_flag=stop,
            )
        finally:
            stop.set()

    operator = asyncio.create_task(handlers_then_stop())
    try:
        await asyncio.gather(
            operator,
            engine.run(stop),
            Scheduler(settings, store, client).run(stop),
            HistoryCleaner(settings, store, client).run(stop),
        )
    finally:
        stop.set()
        await api.cleanup()
        await client.close()
        await pool.close()
        tracing.shutdown()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    # kopf reports every handled event at INFO; failures still show as warnings and errors.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = load_settings(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if args.command == "migrate":
        print(asyncio.run(migrate(settings.database_url)))
        return
    asyncio.run(run(settings))
