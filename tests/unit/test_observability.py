"""Observability without a cluster: run trace ids and spans (in-memory exporter), the runner's
step spans continuing TRACEPARENT, JSON log records, API latency by route template, the pool
collector and the queue gauges."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY, generate_latest

import drover
from drover import _state, _tracing
from drover.protocol import telemetry
from drover.protocol.wire import RunContext, StepRecord
from drover_operator.domain import traces
from drover_operator.domain.pods import PodRequest, build_pod
from drover_operator.domain.records import TaskCounts
from drover_operator.telemetry import metrics, tracing
from tests.unit.test_sdk import FakeApi

RUN = "3f1c6a0e-8d3b-4c59-9a43-2f0e9b7d1c55"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(exporter, batch=False)
    yield exporter
    tracing.shutdown()


def test_trace_ids_are_derived_from_the_run_uid() -> None:
    assert traces.trace_id(RUN) == uuid.UUID(RUN).int
    assert traces.run_span_id(RUN) != traces.attempt_span_id(RUN, 1)
    assert traces.attempt_span_id(RUN, 1) != traces.attempt_span_id(RUN, 2)
    assert traces.traceparent(RUN, 2) == (
        f"00-{uuid.UUID(RUN).hex}-{traces.attempt_span_id(RUN, 2):016x}-01"
    )


def test_pods_carry_the_attempts_traceparent() -> None:
    from drover_operator.crd import TaskSpec

    task = TaskSpec.model_validate({"image": "busybox", "entrypoint": "m:f"})
    request = PodRequest(
        "ns", "r", RUN, "t", 2, 3, task, otlp_endpoint="http://otel:4318", token_secret="s"
    )
    env = {e["name"]: e.get("value") for e in build_pod(request)["spec"]["containers"][0]["env"]}
    assert env["TRACEPARENT"] == traces.traceparent(RUN, 2)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"


def test_a_runs_spans_form_one_trace(spans: InMemorySpanExporter) -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    admitted = created + dt.timedelta(seconds=2)
    ns, task = "ns", "sync"
    tracing.admission_span(RUN, 1, namespace=ns, task=task, waiting_since=created)
    tracing.attempt_span(
        RUN, 1, namespace=ns, task=task, admitted_at=admitted, state="Failed", reason="Error",
        message="boom", exit_code=1,
    )  # fmt: skip
    tracing.attempt_span(
        RUN, 2, namespace=ns, task=task, admitted_at=admitted, state="Succeeded",
        reason="Completed", message="ok",
    )  # fmt: skip
    tracing.run_span(
        RUN, namespace=ns, task=task, name="sync-1", phase="Succeeded", attempts=2,
        created_at=created,
    )  # fmt: skip
    finished = {
        s.name + str((s.attributes or {}).get("drover.attempt", "")): s
        for s in spans.get_finished_spans()
    }
    assert set(finished) == {
        "drover.admission1",
        "drover.attempt1",
        "drover.attempt2",
        "drover.run",
    }
    root = finished["drover.run"]
    assert root.parent is None
    assert root.context.trace_id == uuid.UUID(RUN).int
    assert root.context.span_id == traces.run_span_id(RUN)
    assert root.start_time == int(created.timestamp() * 1e9)
    for name in ("drover.admission1", "drover.attempt1", "drover.attempt2"):
        span = finished[name]
        assert span.context.trace_id == uuid.UUID(RUN).int
        assert span.parent is not None and span.parent.span_id == traces.run_span_id(RUN)
        assert span.attributes is not None and span.attributes["drover.task"] == "sync"
    first = finished["drover.attempt1"]
    assert first.context.span_id == traces.attempt_span_id(RUN, 1)
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None and first.attributes["drover.attempt.exit_code"] == 1
    assert finished["drover.attempt2"].status.status_code is StatusCode.UNSET
    assert finished["drover.admission1"].start_time == int(created.timestamp() * 1e9)


def test_no_exporter_means_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert not tracing.configure()
    tracing.run_span(RUN, namespace="n", name="r", task="t", phase="Failed", attempts=1,
                     created_at=None)  # fmt: skip
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert telemetry.tracing_enabled_by_env()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not telemetry.tracing_enabled_by_env()


@drover.step
def double(x: int) -> int:
    return 2 * x


@drover.step
def explode() -> int:
    raise ValueError("step failed")


def test_runner_steps_continue_the_attempts_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEPARENT", traces.traceparent(RUN, 2))
    exporter = InMemorySpanExporter()
    context = RunContext(
        run_id=RUN, name="r", namespace="ns", task="t", attempt=2, max_attempts=3,
        heartbeat_seconds=90, steps=[StepRecord(seq=0, name="double", value=2)],
    )  # fmt: skip
    state = _state.AttemptState(FakeApi(), context)  # type: ignore[arg-type]
    monkeypatch.setattr(_state, "_current", state)
    assert _tracing.setup_runner({"drover.run.id": RUN, "drover.attempt": 2}, exporter)
    try:
        assert double(1) == 2  # replayed
        assert double(5) == 10  # executed
        with pytest.raises(ValueError, match="step failed"):
            explode()
        _tracing.flush()
    finally:
        _tracing.shutdown()
    steps = exporter.get_finished_spans()
    assert [s.attributes["drover.step.seq"] for s in steps] == [0, 1, 2]  # type: ignore[index]
    assert [s.attributes["drover.step.replayed"] for s in steps] == [True, False, False]  # type: ignore[index]
    for span in steps:
        assert span.name == "drover.step"
        assert span.context.trace_id == uuid.UUID(RUN).int
        assert span.parent is not None
        assert span.parent.span_id == traces.attempt_span_id(RUN, 2)
        assert span.attributes is not None and span.attributes["drover.run.id"] == RUN
    assert steps[2].status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in steps[2].events)


def test_json_logs_carry_run_attempt_and_trace_ids() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(telemetry.JsonFormatter())
    log = logging.getLogger("tests.json")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        log.warning("creating pod %s", "p", extra={"run_id": RUN, "attempt": 2})
        with telemetry.log_context(task="sync"):
            try:
                raise RuntimeError("x")
            except RuntimeError:
                log.exception("failed")
        log.info("plain")
    finally:
        log.removeHandler(handler)
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "creating pod p" and first["level"] == "WARNING"
    assert first["run_id"] == RUN and first["attempt"] == 2
    assert first["trace_id"] == uuid.UUID(RUN).hex
    assert second["task"] == "sync" and "RuntimeError: x" in second["exception"]
    assert "task" not in third and "run_id" not in third


def _sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_api_latency_is_labelled_by_route_template() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["run_id"]})

    async def go() -> None:
        app = web.Application(middlewares=[metrics.api_latency])
        app.router.add_get("/v1/runs/{run_id}/context", handler)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get(f"/v1/runs/{RUN}/context")).status == 200
            assert (await client.get("/nowhere")).status == 404

    labels = {"route": "/v1/runs/{run_id}/context", "method": "GET", "code": "200"}
    before = _sample("drover_api_request_duration_seconds_count", labels) or 0
    asyncio.run(go())
    assert _sample("drover_api_request_duration_seconds_count", labels) == before + 1
    text = generate_latest(REGISTRY).decode()
    assert RUN not in text  # never a raw path


def _counts(name: str, *, queued: int, active: int) -> TaskCounts:
    return TaskCounts("ns", name, 1, None, None, active=active, queued=queued)


def test_pool_collector_and_task_gauges() -> None:
    stats: dict[str, int] = {"pool_max": 10, "pool_size": 3, "pool_available": 2}
    metrics.watch_pool(lambda: stats)
    assert _sample("drover_db_pool_connections", {}) == 3
    assert _sample("drover_db_pool_requests_total", {}) == 0
    metrics.set_task_counts([_counts("a", queued=4, active=1), _counts("b", queued=0, active=2)])
    assert _sample("drover_queued_runs", {"namespace": "ns", "task": "a"}) == 4
    metrics.set_task_counts([_counts("b", queued=1, active=0)])
    assert _sample("drover_queued_runs", {"namespace": "ns", "task": "a"}) is None
    assert _sample("drover_active_runs", {"namespace": "ns", "task": "b"}) == 0


def test_promtool_wrapper_module_keeps_upstream_replaces() -> None:
    from drover_localcluster.binaries import promtool_wrapper_gomod

    upstream = "module github.com/prometheus/prometheus\n\ngo 1.26.0\n\nrequire (\n)\n\n"
    upstream += "replace cloud.google.com/go => cloud.google.com/go v0.123.0\n"
    mod = promtool_wrapper_gomod(upstream, "0.313.5")
    assert "go 1.26.0" in mod
    assert "require github.com/prometheus/prometheus v0.313.5" in mod
    assert "\tcloud.google.com/go => cloud.google.com/go v0.123.0" in mod
