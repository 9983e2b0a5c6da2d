"""The operator's metrics exposition, linted by Prometheus' own promtool."""

from __future__ import annotations

import datetime as dt

from prometheus_client import REGISTRY, generate_latest

from drover_operator.telemetry import metrics
from tests.promtool import check_metrics


def test_exposition_passes_promtool() -> None:
    metrics.RUNS_CREATED.labels("ns", "t").inc()
    metrics.run_finished("ns", "t", "Succeeded", dt.datetime.now(dt.UTC))
    metrics.watch_pool(lambda: {"pool_max": 10, "requests_num": 5, "requests_wait_ms": 20})
    check_metrics(generate_latest(REGISTRY))
