"""Observability end to end: an SDK run's trace (admission, attempt, steps from the runner)
exported over OTLP/HTTP to a local receiver, `/metrics` after the run clean under
`promtool check metrics`, and JSON logs."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from drover_operator.domain import traces
from tests.conftest import E2ECluster, wait_for
from tests.e2e.operator_support import OperatorProcess, run, wait_phase
from tests.e2e.test_runner import sdk_task
from tests.promtool import check_metrics

pytestmark = pytest.mark.e2e


class Receiver:
    """A minimal OTLP/HTTP trace receiver: POST /v1/traces, protobuf."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.add(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    entry = {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(),
                        "service": resource.get("service.name"),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "error": span.status.code == 2,
                    }
                    with self.lock:
                        self.spans.append(entry)

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def traced_operator(
    cluster: E2ECluster, namespace: str, database: str, drover_crds: None, receiver: Receiver
) -> Iterator[OperatorProcess]:
    log = cluster.local.directory / "logs" / f"operator-{namespace}.log"
    process = OperatorProcess(cluster, namespace, database, log).start(
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "DROVER_RUNNER_OTLP_ENDPOINT": receiver.url,
            "DROVER_LOG_FORMAT": "json",
        }
    )
    yield process
    process.stop()
    print(f"--- operator log ({log}) ---\n{process.log_tail()}")


def test_a_runs_trace_metrics_and_json_logs(
    cluster: E2ECluster,
    namespace: str,
    traced_operator: OperatorProcess,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    c = cluster.client
    # One attempt is the trace this test reads: a heartbeat timeout a loaded machine cannot
    # trip (the runner's default 3 s here made a stall, and a second attempt, possible).
    sdk_task(cluster, namespace, "order", "three_steps", timeouts={"heartbeat": "120s"})
    uid = run(c, namespace, "order-1", "order", payload={"dir": str(tmp_path)})
    assert wait_phase(c, namespace, "order-1", "Succeeded", "Failed")["phase"] == "Succeeded"

    trace_id = uid.replace("-", "")
    names = ("drover.run", "drover.admission", "drover.attempt", "drover.step")

    def complete() -> list[dict[str, Any]] | None:
        spans = receiver.of_trace(trace_id)
        counts = [sum(1 for s in spans if s["name"] == n) for n in names]
        return spans if counts == [1, 1, 1, 3] else None

    try:
        # A hang-stop, not a speed claim: the runner exports its spans as it exits, which a
        # loaded machine can delay well past the run's end.
        spans = wait_for(complete, timeout=300, interval=0.5, what="the run's spans")
    except AssertionError as exc:
        received = sorted(s["name"] for s in receiver.of_trace(trace_id))
        raise AssertionError(f"{exc}; received {received}") from None
    by_name = {s["name"]: s for s in spans}
    root, attempt = by_name["drover.run"], by_name["drover.attempt"]
    assert root["parent"] == "" and root["span_id"] == f"{traces.run_span_id(uid):016x}"
    assert root["attributes"]["drover.run.phase"] == "Succeeded"
    assert by_name["drover.admission"]["parent"] == root["span_id"]
    assert attempt["parent"] == root["span_id"]
    assert attempt["span_id"] == f"{traces.attempt_span_id(uid, 1):016x}"
    assert attempt["attributes"]["drover.attempt"] == 1
    assert attempt["attributes"]["drover.attempt.state"] == "Succeeded"
    for span in (root, attempt, by_name["drover.admission"]):
        assert span["service"] == "drover-operator"
        assert span["attributes"]["drover.task"] == "order"
        assert span["attributes"]["drover.run.id"] == uid
    steps = sorted(
        (s for s in spans if s["name"] == "drover.step"),
        key=lambda s: s["attributes"]["drover.step.seq"],
    )
    assert [s["attributes"]["drover.step.name"] for s in steps] == ["fetch", "charge", "ship"]
    for step in steps:
        assert step["service"] == "drover-runner"
        assert step["parent"] == attempt["span_id"]
        assert step["attributes"]["drover.attempt"] == 1
        assert step["attributes"]["drover.task"] == "order"
        assert not step["error"]

    # Metrics after the run: clean exposition, the run counted.
    with urllib.request.urlopen(f"{traced_operator.api_url}/metrics", timeout=10) as response:
        exposition = response.read()
    check_metrics(exposition)
    text = exposition.decode()
    finished = (
        f'drover_runs_finished_total{{namespace="{namespace}",phase="Succeeded",task="order"}} 1.0'
    )
    assert finished in text
    assert (
        f'drover_admission_latency_seconds_count{{namespace="{namespace}",task="order"}} 1.0'
        in text
    )
    assert 'route="/v1/runs/{run_id}/steps"' in text
    assert "drover_db_pool_connections " in text

    # JSON logs: every record of the operator is one object per line.
    records = [
        json.loads(line)
        for line in traced_operator.log.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(r["message"].startswith("API listening") for r in records)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
