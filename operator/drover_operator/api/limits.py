"""Rate limits on the endpoints anyone who can reach the API may call without a Kubernetes
identity: signed webhooks and waitpoint token URLs. Each request counts against its source
address and against its target (the webhook, the token), in a moving window, before the
database or the body is touched; over either bound it gets 429 with `Retry-After`.

The windows live in each replica's memory (the `limits` library): N replicas allow up to N
times the bound. That is enough to keep a flood from one source, or at one token, from
reaching Postgres; an Ingress in front is the place for global limits.
"""

from __future__ import annotations

import math
import time

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from drover_operator.api.errors import ProblemError


class RateLimitedError(ProblemError):
    """429, with the seconds after which a retry may succeed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, "rate-limited", message)
        self.retry_after = retry_after


class RateLimits:
    """Moving-window bounds per source address and per target."""

    def __init__(self, per_source: str, per_target: str) -> None:
        self.per_source: RateLimitItem = parse(per_source)
        self.per_target: RateLimitItem = parse(per_target)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def check(self, request: web.Request, target: str) -> None:
        """Count the request; raise `RateLimitedError` when its source or target is over."""
        source = request.remote or "unknown"
        for item, kind, key in (
            (self.per_source, "source", source),
            (self.per_target, "target", target),
        ):
            if not await self._limiter.hit(item, kind, key):
                stats = await self._limiter.get_window_stats(item, kind, key)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                what = f"this {kind}" if kind == "target" else f"source {source}"
                raise RateLimitedError(
                    f"too many requests for {what} (at most {item}); retry in {retry}s", retry
                )


LIMITS: web.AppKey[RateLimits] = web.AppKey("limits", RateLimits)
