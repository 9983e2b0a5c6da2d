"""The endpoints that need no Kubernetes identity — signed webhooks and waitpoint token URLs —
are bounded per target (and per source): past the bound a request gets 429 with
Retry-After before anything is read or created, and guessing a token's secret is bounded
the same way. Judged by the TaskRuns the API server holds."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import E2ECluster, wait_for
from tests.e2e.api_support import taskruns
from tests.e2e.operator_support import OperatorProcess, run, task, wait_phase
from tests.e2e.test_triggers import OK, _sign, _webhook_key
from tests.e2e.test_workflows import ledger, sdk_task

pytestmark = pytest.mark.e2e


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    """(status, Retry-After) of one POST."""
    request = urllib.request.Request(url, method="POST", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After")


@pytest.fixture
def limited(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None
) -> Iterator[OperatorProcess]:
    """An operator allowing 3 requests a minute per webhook or token URL."""
    log = cluster.local.directory / "logs" / f"operator-{namespace}.log"
    env = {"DROVER_API_RATE_PER_TARGET": "3/minute", "DROVER_API_RATE_PER_SOURCE": "1000/minute"}
    process = OperatorProcess(cluster, namespace, database, log).start(extra_env=env)
    yield process
    process.stop()
    print(f"--- operator log ({log}) ---\n{process.log_tail()}")


def test_a_webhook_past_its_bound_gets_429_and_starts_nothing(
    cluster: E2ECluster, namespace: str, limited: OperatorProcess
) -> None:
    task(cluster.client, namespace, "hook", {**OK, "webhook": {}})
    key = _webhook_key(cluster, namespace, "hook")
    url = f"{limited.api_url}/v1/hooks/{namespace}/hook"
    answers = []
    for i in range(5):
        body = json.dumps({"delivery": i}).encode()
        headers = {"X-Drover-Signature-256": _sign(key, body), "Content-Type": "application/json"}
        answers.append(post(url, body, headers))
    assert [code for code, _ in answers] == [201, 201, 201, 429, 429]
    assert all(retry is not None and 1 <= int(retry) <= 60 for _, retry in answers[3:])
    assert len(taskruns(cluster.client, namespace)) == 3


def test_guessing_a_token_secret_is_bounded_per_token(
    cluster: E2ECluster, namespace: str, limited: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    sdk_task(cluster, namespace, "approval", "approval")
    for name in ("first", "second"):
        run(c, namespace, name, "approval", payload={"dir": str(tmp_path)})
        wait_phase(c, namespace, name, "Waiting")

    def url_of(name: str) -> str:
        found = wait_for(
            lambda: [
                e["url"] for e in ledger(tmp_path) if e["event"] == "token" and e["run"] == name
            ],
            what=f"{name}'s token",
        )
        return str(found[-1])

    first, second = url_of("first"), url_of("second")
    guesses = [post(first.rsplit("/", 1)[0] + f"/guess-{i}", b"{}") for i in range(3)]
    assert [code for code, _ in guesses] == [404, 404, 404]
    # The right secret too, once the token's bound is spent: guessing cannot go faster.
    code, retry_after = post(first, b'{"approved": true}')
    assert code == 429 and retry_after is not None
    assert wait_phase(c, namespace, "first", "Waiting")["phase"] == "Waiting"
    # Another token is another target.
    assert post(second, b'{"approved": true}')[0] == 200
    st = wait_phase(c, namespace, "second", "Succeeded", "Failed")
    assert st["output"]["data"] == {"approved": True}
