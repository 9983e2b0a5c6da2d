"""Request bodies over real HTTP on localhost: a body that arrives in pieces is read whole
(a short read once answered a valid body with 400 "not JSON"), one past the limit is refused
with 413 however it arrives, and one Postgres could not store with 422. Names from URLs that
no TaskRun can have are not found without a request to the API server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from drover_operator.api.errors import problems
from drover_operator.api.triggers import read_json
from drover_operator.converge.taskruns import TaskRunWriter

LIMIT = 256 * 1024


def _app() -> web.Application:
    app = web.Application(middlewares=[problems])

    async def echo(request: web.Request) -> web.Response:
        body = await read_json(request, LIMIT)
        return web.json_response({"size": len(json.dumps(body))})

    app.router.add_post("/", echo)
    return app


async def _in_pieces(data: bytes, piece: int) -> AsyncIterator[bytes]:
    """The body sent chunked, a piece at a time, each after the server read the last."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        await asyncio.sleep(0)  # let the server read what has arrived: a short read


async def _post(data: bytes, piece: int | None) -> tuple[int, dict[str, object]]:
    async with TestClient(TestServer(_app())) as client:
        body = data if piece is None else _in_pieces(data, piece)
        response = await client.post("/", data=body, headers={"Content-Type": "application/json"})
        return response.status, await response.json()


def test_a_body_sent_in_pieces_is_read_whole() -> None:
    data = json.dumps({"data": "x" * (LIMIT - 100)}).encode()
    assert len(data) <= LIMIT
    status, answer = asyncio.run(_post(data, piece=1000))
    assert (status, answer) == (200, {"size": len(data)})


def test_a_body_past_the_limit_is_413_whole_or_in_pieces() -> None:
    data = json.dumps({"data": "x" * LIMIT}).encode()
    for piece in (None, 1000):
        status, answer = asyncio.run(_post(data, piece))
        assert status == 413, (piece, answer)
        assert str(answer["type"]).endswith("too-large"), answer


def test_a_nul_character_anywhere_is_422_before_anything_is_created() -> None:
    """Postgres cannot store `\\u0000` in JSON: refused at the door, never a TaskRun the
    operator could not record (a fuzzer found one retried forever)."""
    for body in ({"payload": {"k\u0000": 1}}, {"payload": ["a", {"b": "c\u0000"}]}):
        status, answer = asyncio.run(_post(json.dumps(body).encode(), None))
        assert status == 422 and "NUL" in str(answer["message"]), answer
    # The six characters `\u0000` as text are fine.
    text = json.dumps({"payload": "\\u0000"}).encode()
    assert asyncio.run(_post(text, None))[0] == 200


def test_a_name_no_taskrun_can_have_is_not_found_without_asking_the_api_server() -> None:
    """Names come from URLs: one with control characters is not even a valid request URL."""

    class NoClient:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the API server was asked ({name})")

    writer = TaskRunWriter(NoClient())  # type: ignore[arg-type]
    for namespace, name in [("ns", "³\x1d"), ("ns", "UPPER"), ("ns", "a" * 254), ("N S", "r")]:
        assert asyncio.run(writer.get_run(namespace, name)) is None
        assert asyncio.run(writer.uid_of(namespace, name)) is None


def test_a_client_gone_mid_answer_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A dashboard tab closed on a live event stream: the stream's next write fails. That is
    # no failure of ours, yet the middleware logged it as one, with a traceback, every time
    # (and tried to answer 500 to nobody). It goes on to aiohttp, which ignores it quietly.
    async def gone(request: web.Request) -> web.StreamResponse:
        raise ClientConnectionResetError("Cannot write to closing transport")

    async def scenario() -> None:
        await problems(make_mocked_request("GET", "/ui/runs-events"), gone)

    with (
        caplog.at_level(logging.DEBUG, logger="drover_operator"),
        pytest.raises(ConnectionResetError),
    ):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
