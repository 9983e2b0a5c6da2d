"""Postgres: the durable record of Tasks, runs, attempts, schedules and their history.

The only place SQL lives. Each concept has its own module with its statements and a class of
named methods returning typed records (`drover_operator.domain.records`); every method is
one transaction. Where a transaction must decide something (admit, end an attempt, a
schedule tick), the caller passes the rule in (`AdmissionPolicy`, `EndDecider`,
`ScheduleDecider`): the store reads under lock, asks, and writes the answer, so decisions
stay atomic while the rules stay pure and live with the run lifecycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drover_operator.store.admission import AdmissionStore
from drover_operator.store.attempts import AttemptStore
from drover_operator.store.db import EVENTS_CHANNEL, Pool, listen, open_pool, ping
from drover_operator.store.history import HistoryStore
from drover_operator.store.keys import KeyStore
from drover_operator.store.outbox import EventOutbox
from drover_operator.store.overviews import OverviewStore
from drover_operator.store.runapi import RunApiStore
from drover_operator.store.runs import RunStore
from drover_operator.store.runviews import RunViewStore
from drover_operator.store.schedules import ScheduleStore
from drover_operator.store.tasks import TaskStore
from drover_operator.store.tokens import TokenStore
from drover_operator.store.triggers import TriggerStore
from drover_operator.store.waits import WaitStore
from drover_operator.store.webhooks import WebhookStore


class Store:
    """All of the operator's tables, by concept, over one connection pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.tasks = TaskStore(pool)
        self.runs = RunStore(pool)
        self.admission = AdmissionStore(pool)
        self.attempts = AttemptStore(pool)
        self.schedules = ScheduleStore(pool)
        self.history = HistoryStore(pool)
        self.outbox = EventOutbox(pool)
        self.runapi = RunApiStore(pool)
        self.keys = KeyStore(pool)
        self.triggers = TriggerStore(pool)
        self.runviews = RunViewStore(pool)
        self.webhooks = WebhookStore(pool)
        self.waits = WaitStore(pool)
        self.tokens = TokenStore(pool)
        self.overviews = OverviewStore(pool)

    @classmethod
    async def open(cls, dsn: str, size: int) -> Store:
        return cls(await open_pool(dsn, size))

    async def ping(self) -> None:
        """Raises when the database cannot answer (readiness)."""
        await ping(self.pool)

    async def follow_events(self, on_event: Callable[[str], None], stop: asyncio.Event) -> None:
        """Call `on_event(payload)` for each run recorded or changing phase (`run <namespace>
        <id>`) and each batch of log lines written (`logs <run id>`), until `stop`."""
        dsn = self.pool.conninfo
        assert isinstance(dsn, str), "the pool was opened with a connection string"
        await listen(dsn, on_event, stop, EVENTS_CHANNEL)

    async def close(self) -> None:
        await self.pool.close()


__all__ = ["Store"]
