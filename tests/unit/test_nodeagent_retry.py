"""The node agent's calls outlast an API server restart: transport errors and 5xx answers are
retried, anything else is the caller's."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import pytest

from drover_localcluster.nodeagent import retry


def test_transport_errors_are_retried_until_the_call_succeeds(monkeypatch: Any) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    failures: list[Exception] = [httpx.ConnectError("refused"), httpx.RemoteProtocolError("")]

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert asyncio.run(retry.while_unreachable("a read", call)) == "ok"
    assert waits == [0.2, 0.4]  # backing off


def test_other_errors_are_the_callers() -> None:
    async def call() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(retry.while_unreachable("a read", call))
