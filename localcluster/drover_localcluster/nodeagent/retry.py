"""Calls to the API server that must outlast its restarts, as the kubelet's do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx2 as httpx
from lightkube import ApiError

log = logging.getLogger(__name__)

#: Answers that mean "try again": the API server or its etcd restarting, or overloaded.
TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


async def while_unreachable(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, retried with backoff while the API server is unreachable or answers 5xx
    (restarting, or its etcd is), as the kubelet retries: a node agent that gave up during
    an outage would leave its pods stale for good. Other errors are the caller's."""
    delay = 0.2
    while True:
        try:
            return await call()
        except ApiError as exc:
            if exc.status.code not in TRANSIENT_CODES:
                raise
            problem: Exception = exc
        except httpx.TransportError as exc:
            problem = exc
        log.warning("%s: %s; retrying", what, str(problem) or type(problem).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
