"""`drover-operator run` and `drover-operator migrate`: settings from the environment and
flags, validated before anything starts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from drover.protocol.telemetry import JsonFormatter
from drover_operator import settings as operator_settings
from drover_operator.errors import DroverOperatorError
from drover_operator.store.migrate import migrate


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
    migrate_command = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate_command.add_argument("--database-url", default=None, help="Postgres DSN")
    return parser


def load_settings(args: argparse.Namespace) -> operator_settings.OperatorSettings:
    """Settings from `DROVER_*` and the flags (which win); exits naming every bad value."""
    namespaces = getattr(args, "namespaces", None)
    flags = {
        "DROVER_NAMESPACES": ",".join(namespaces) if namespaces else None,
        "DROVER_STANDALONE": "true" if getattr(args, "standalone", None) else None,
        "DROVER_PEERING": getattr(args, "peering", None),
        "DROVER_DATABASE_URL": getattr(args, "database_url", None),
    }
    try:
        return operator_settings.load(os.environ, flags)
    except DroverOperatorError as exc:
        raise SystemExit(f"drover-operator: {exc}") from None


def _configure_logging(settings: operator_settings.OperatorSettings) -> None:
    logging.basicConfig(
        level=settings.logging.level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(settings.logging.level)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    # kopf reports every handled event at INFO; failures still show as warnings and errors.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if settings.logging.format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = load_settings(args)
    _configure_logging(settings)
    if args.command == "migrate":
        print(asyncio.run(migrate(settings.database.url)))
        return
    from drover_operator.main import run  # kopf is imported only to run

    try:
        asyncio.run(run(settings))
    except DroverOperatorError as exc:
        raise SystemExit(f"drover-operator: {exc}") from None
