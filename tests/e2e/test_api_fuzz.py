"""Fuzzing the endpoints task code and outside systems call, with valid credentials: the run
API and workflow calls (a live attempt's token per call, so that generated bodies reach the
handlers rather than stopping at 401 or 409), and waitpoint token URLs (a real token's id
and secret). Nothing may answer 5xx."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from drover_operator.domain.tokens import SIGNING_KEY_NAME, attempt_token
from tests.conftest import E2ECluster, wait_for
from tests.e2e.api_support import call, taskruns
from tests.e2e.operator_support import OperatorProcess, run, task, wait_phase
from tests.e2e.test_workflows import ledger, sdk_task

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ATTEMPTS = 120


def test_the_run_api_and_token_urls_never_answer_5xx_to_credentialed_fuzzing(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    c = cluster.client
    # Attempts that stay admitted without a pod ever running (no node matches): each holds a
    # live token the test mints with the replicas' key, as the operator does for a pod.
    task(
        c,
        namespace,
        "held",
        {
            "image": "busybox",
            "entrypoint": "tests.e2e.sdk_tasks:waits",
            "podTemplate": {"spec": {"nodeSelector": {"drover.dev/fuzz": "nowhere"}}},
            "timeouts": {"pending": "1h", "heartbeat": "1h"},
        },
    )
    uids = [run(c, namespace, f"held-{i:03d}", "held") for i in range(ATTEMPTS)]
    wait_for(
        lambda: all(r["status"].get("attempt") == 1 for r in taskruns(c, namespace).values()),
        timeout=300,
        what=f"{ATTEMPTS} attempts admitted",
    )
    with psycopg.connect(operator.dsn) as conn:
        row = conn.execute("SELECT value FROM drover_keys WHERE name = %s", (SIGNING_KEY_NAME,))
        key = bytes(row.fetchone()[0])  # type: ignore[index]
    pool = {"attempts": [[uid, attempt_token(key, uid, 1)] for uid in uids]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))

    # A real waitpoint token, for its URL.
    sdk_task(cluster, namespace, "approval", "approval")
    run(c, namespace, "approval-1", "approval", payload={"dir": str(tmp_path)})
    wait_phase(c, namespace, "approval-1", "Waiting")
    [token] = [e for e in ledger(tmp_path) if e["event"] == "token"]
    token_id, secret = token["url"].rsplit("/", 2)[-2:]

    code, document = call(operator.api_url, "GET", "/v1/openapi.json")
    assert code == 200
    pins = {"token": [token_id], "secret": [secret, "not-the-secret"]}
    for item in document["paths"].values():
        for parameter in item.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] in pins:
                parameter["schema"] = {"type": "string", "enum": pins[parameter["name"]]}
    # Batches kept small: a thousand children per call would fill the cluster with TaskRuns
    # (and outlast the fuzzer's request timeout), not find bugs.
    batch = document["components"]["schemas"]["ChildBatchRequest"]["properties"]["items"]
    batch["maxItems"] = 3
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(document))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(schema),
            "--url",
            operator.api_url,
            "--include-path-regex",
            "^/v1/(runs|tokens)/",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "3",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        env={
            **cluster.env,
            "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks",
            "DROVER_FUZZ_POOL": str(tmp_path / "pool.json"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    cases = re.search(r"(\d+) generated, \d+ passed", proc.stdout)
    assert cases is not None and int(cases.group(1)) >= 150, proc.stdout[-2000:]
    # The credentials were used: calls reached handlers and changed runs (some completed or
    # failed their attempt), rather than all stopping at authentication.
    phases = {
        r["status"].get("phase") for n, r in taskruns(c, namespace).items() if n.startswith("held")
    }
    assert phases & {"Succeeded", "Failed", "Retrying", "Waiting"}, phases
