"""A sweep run now and then every interval until the operator stops."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(
    interval: dt.timedelta, stop: asyncio.Event, sweep: Callable[[], Awaitable[object]], what: str
) -> None:
    """`sweep()` at once and then every `interval` until `stop`; a failure is logged and the
    next round tries again."""
    while not stop.is_set():
        try:
            await sweep()
        except Exception:
            log.exception("%s failed; retrying", what)
        # asyncio.timeout, not wait_for: no task of its own, which kopf would take for one of
        # its handlers' and cancel when it stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval.total_seconds()):
                await stop.wait()
