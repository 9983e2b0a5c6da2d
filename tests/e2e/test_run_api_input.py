"""The run API and untrusted input, from the outside: the token is checked before a byte of
the body is read, an attempt that is no longer active reads nothing, and a retried identical
checkpoint always succeeds (also when the retries race each other)."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from drover.protocol.wire import MAX_REQUEST_BYTES
from tests.conftest import E2ECluster
from tests.e2e.operator_support import OperatorProcess, run, wait_phase
from tests.e2e.test_runner import call, sdk_task, token

pytestmark = pytest.mark.e2e


def send_headers_only(
    operator: OperatorProcess, method: str, path: str, bearer: str, length: int
) -> tuple[int, dict[str, Any]]:
    """Announce a body of `length` bytes and send none of it: only a server that answers
    without reading the body answers at all (the timeout only ends a hung test)."""
    url = urllib.parse.urlsplit(operator.api_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", f"Bearer {bearer}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


WRITES = [("PUT", "steps"), ("POST", "complete"), ("POST", "fail"), ("PATCH", "metadata"),
          ("POST", "logs")]  # fmt: skip


def test_the_token_is_checked_before_the_body_is_read(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "idle", "waits")
    first = run(c, namespace, "idle-1", "idle")
    second = run(c, namespace, "idle-2", "idle")
    wait_phase(c, namespace, "idle-1", "Running")
    mine = token(cluster, namespace, "idle-1-a1")
    forged = mine[:-4] + ("AAAA" if not mine.endswith("AAAA") else "BBBB")
    for method, endpoint in WRITES:
        path = f"/v1/runs/{first}/{endpoint}"
        # A forged token: refused at once, whatever the body would have been.
        code, problem = send_headers_only(operator, method, path, forged, 1_000_000)
        assert (code, problem["type"]) == (401, "unauthenticated"), (endpoint, problem)
        # A genuine token for another run: refused too, before the body.
        other = f"/v1/runs/{second}/{endpoint}"
        code, problem = send_headers_only(operator, method, other, mine, 1_000_000)
        assert (code, problem["type"]) == (403, "forbidden"), (endpoint, problem)
        # Not a body problem (400, 413, 422) for a stranger: the token comes first.
        for body in ("not json", "x" * (MAX_REQUEST_BYTES + 1)):
            code, problem = raw_call(operator, method, path, forged, body.encode())
            assert code == 401, (endpoint, len(body), code, problem)
    # The genuine token still gets its bodies checked.
    code, problem = raw_call(operator, "PUT", f"/v1/runs/{first}/steps", mine, b"not json")
    assert (code, problem["type"]) == (422, "invalid-body")


def raw_call(
    operator: OperatorProcess, method: str, path: str, bearer: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    url = urllib.parse.urlsplit(operator.api_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
        # The server may answer and close without reading the rest: that is the point.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_an_attempt_that_is_no_longer_active_reads_nothing(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "greet", "greets")
    uid = run(c, namespace, "greet-1", "greet", payload={"name": "ada-lovelace-1815"})
    st = wait_phase(c, namespace, "greet-1", "Succeeded", "Failed")
    assert st["phase"] == "Succeeded", st
    finished = token(cluster, namespace, "greet-1-a1")
    for method, endpoint in [("GET", "metadata"), ("GET", "context")]:
        code, problem = call(operator, method, f"/v1/runs/{uid}/{endpoint}", finished)
        assert (code, problem["type"]) == (409, "attempt-inactive"), endpoint
        assert "ada-lovelace-1815" not in json.dumps(problem)


def test_a_retried_identical_checkpoint_always_succeeds(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "idle", "waits")
    uid = run(c, namespace, "idle-1", "idle")
    wait_phase(c, namespace, "idle-1", "Running")
    mine = token(cluster, namespace, "idle-1-a1")
    path = f"/v1/runs/{uid}/steps"

    def put(seq: int, name: str, value: Any) -> tuple[int, dict[str, Any]]:
        return call(operator, "PUT", path, mine, {"steps": [{"seq": seq, "name": name,
                                                            "value": value}]})  # fmt: skip

    value = {"order": 7, "lines": [1.5, 2]}
    assert put(100, "charge", value) == (200, {"stored": 1})
    assert put(100, "charge", value) == (200, {"stored": 1})  # a retry after success
    code, problem = put(100, "charge", {"order": 8, "lines": [1.5, 2]})
    assert (code, problem["type"]) == (409, "non-determinism")
    assert "another value" in problem["message"]
    code, problem = put(100, "refund", value)
    assert (code, problem["type"]) == (409, "non-determinism")

    # Retries racing each other (and their first try): every one is answered "stored".
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: put(200 + i // 8, "burst", {"n": i // 8}), range(64)))
    assert answers == [(200, {"stored": 1})] * 64
    code, context = call(operator, "GET", f"/v1/runs/{uid}/context", mine)
    assert code == 200
    assert [(s["seq"], s["name"], s["value"]) for s in context["steps"]] == [
        (100, "charge", value),
        *[(200 + i, "burst", {"n": i}) for i in range(8)],
    ]
