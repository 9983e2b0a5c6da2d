"""Rate limits on the unauthenticated endpoints, over real HTTP on localhost: per target,
per source, 429 with Retry-After, and settings refused at start-up naming the variable."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drover_operator.api.errors import problems
from drover_operator.api.limits import LIMITS, RateLimits
from drover_operator.errors import ConfigurationError
from drover_operator.settings import load


def _app(per_source: str, per_target: str) -> web.Application:
    app = web.Application(middlewares=[problems])
    app[LIMITS] = RateLimits(per_source, per_target)

    async def hit(request: web.Request) -> web.Response:
        await request.app[LIMITS].check(request, request.match_info["target"])
        return web.json_response({"ok": True})

    app.router.add_post("/{target}", hit)
    return app


async def _statuses(
    per_source: str, per_target: str, targets: list[str]
) -> list[tuple[int, str | None, dict[str, object]]]:
    async with TestClient(TestServer(_app(per_source, per_target))) as client:
        answers = []
        for target in targets:
            response = await client.post(f"/{target}")
            answers.append(
                (response.status, response.headers.get("Retry-After"), await response.json())
            )
        return answers


def test_a_target_over_its_bound_gets_429_with_retry_after() -> None:
    answers = asyncio.run(_statuses("100/minute", "3/minute", ["a"] * 4 + ["b"]))
    assert [a[0] for a in answers] == [200, 200, 200, 429, 200]
    _, retry_after, body = answers[3]
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    assert body["type"] == "rate-limited" and "3 per 1 minute" in str(body["message"])


def test_a_source_over_its_bound_gets_429_whatever_the_target() -> None:
    answers = asyncio.run(_statuses("5/minute", "100/minute", [f"t{i}" for i in range(7)]))
    assert [a[0] for a in answers] == [200] * 5 + [429, 429]
    assert "source 127.0.0.1" in str(answers[5][2]["message"])


@pytest.mark.parametrize("variable", ["DROVER_API_RATE_PER_SOURCE", "DROVER_API_RATE_PER_TARGET"])
def test_a_malformed_rate_is_refused_at_start_up(variable: str) -> None:
    env = {"DROVER_DATABASE_URL": "postgresql://x", variable: "lots"}
    with pytest.raises(ConfigurationError) as refused:
        load(env)
    assert variable in str(refused.value)
