"""What the API's handlers share, as typed application keys."""

from __future__ import annotations

from aiohttp import web

from drover_operator.engine.lifecycle import RunLifecycle
from drover_operator.store import Store

STORE: web.AppKey[Store] = web.AppKey("store", Store)
LIFECYCLE: web.AppKey[RunLifecycle] = web.AppKey("lifecycle", RunLifecycle)
