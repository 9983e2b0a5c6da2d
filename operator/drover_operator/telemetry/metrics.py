"""Prometheus metrics: every metric object the operator exports, in one place.

Counters are incremented after the transaction that made the decision committed, by the
replica that made it: sum them over replicas. Gauges of queued and active runs are set by
every replica's reconcile loop from the same query: take `max` over replicas. The pool
collector reads `get_stats()` of this replica's pool at scrape time. All metrics are on the
operator's API port at `/metrics` (the default registry). See docs/observability.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from drover_operator.domain.records import TaskCounts

TASK = ("namespace", "task")

# Seconds: from a second to a day, for queueing and runs (admission waits for slots).
_LONG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
                 7200, 21600, 86400)  # fmt: skip
# The API: checkpoints take about a millisecond.
_API_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

RUNS_CREATED = Counter(
    "drover_runs_created_total", "TaskRuns recorded (first seen) by the operator.", TASK
)
RUNS_FINISHED = Counter(
    "drover_runs_finished_total",
    "Runs that reached a final phase, by phase (Succeeded, Failed, Canceled, TimedOut, Expired).",
    (*TASK, "phase"),
)
ATTEMPTS_ADMITTED = Counter(
    "drover_attempts_admitted_total", "Attempts admitted into a concurrency slot.", TASK
)
ATTEMPTS_FINISHED = Counter(
    "drover_attempts_finished_total",
    "Attempts that ended, by state (Succeeded, Failed, Lost, TimedOut, Canceled).",
    (*TASK, "state"),
)
RETRIES = Counter("drover_retries_total", "Retries scheduled after a failed attempt.", TASK)
STALLS = Counter(
    "drover_stalls_total", "Attempts failed because their heartbeats stopped (stalled).", TASK
)
QUEUED_RUNS = Gauge(
    "drover_queued_runs", "Runs waiting for admission (Queued or Retrying), per Task.", TASK
)
ACTIVE_RUNS = Gauge("drover_active_runs", "Runs Starting or Running, per Task.", TASK)
WAITING_RUNS = Gauge(
    "drover_waiting_runs",
    "Runs suspended on a durable wait (phase Waiting: no pod, no slot), per Task.",
    TASK,
)
SUSPENDS = Counter(
    "drover_suspends_total",
    "Executions that suspended on a durable wait (their pod exits, their slot is freed), by "
    "what they wait on.",
    (*TASK, "kind"),
)
RESUMES = Counter(
    "drover_resumes_total",
    "Suspended runs queued again because their wait is over.",
    (*TASK, "kind"),
)
RESUME_LATENCY = Histogram(
    "drover_resume_latency_seconds",
    "From when a suspended run's wait was over (wake time, token completed, last child "
    "finished) to the run being queued again.",
    TASK,
    buckets=_LONG_BUCKETS,
)
ADMISSION_LATENCY = Histogram(
    "drover_admission_latency_seconds",
    "From a TaskRun's creation to its first attempt's pod being created (includes waiting "
    "for a slot and any delay/notBefore).",
    TASK,
    buckets=_LONG_BUCKETS,
)
RUN_DURATION = Histogram(
    "drover_run_duration_seconds",
    "From a run's first attempt starting to its final phase, by phase.",
    (*TASK, "phase"),
    buckets=_LONG_BUCKETS,
)
SCHEDULE_TICKS = Counter(
    "drover_schedule_ticks_total",
    "Schedule ticks decided, by result (started, replaced, skipped).",
    (*TASK, "result"),
)
SCHEDULE_MISSED = Counter(
    "drover_schedule_missed_ticks_total",
    "Schedule ticks missed (the operator was away or behind): at most the latest one runs.",
    TASK,
)
EVENTS_NOT_POSTED = Counter(
    "drover_events_not_posted_total",
    "Kubernetes Events the operator could not post, by the API's status code (403: missing "
    "RBAC). They are retried for an hour, Kubernetes' own Event lifetime.",
    ("code",),
)
API_LATENCY = Histogram(
    "drover_api_request_duration_seconds",
    "HTTP API requests, by route template, method and status code.",
    ("route", "method", "code"),
    buckets=_API_BUCKETS,
)


def run_finished(
    namespace: str, task: str, phase: str, started_at: dt.datetime | None = None
) -> None:
    RUNS_FINISHED.labels(namespace, task, phase).inc()
    if started_at is not None:
        seconds = (dt.datetime.now(dt.UTC) - started_at).total_seconds()
        RUN_DURATION.labels(namespace, task, phase).observe(max(0.0, seconds))


def set_task_counts(counts: Iterable[TaskCounts]) -> None:
    """Queued and active runs per Task, as the reconcile loop counted them; Tasks no longer
    there lose their series."""
    seen: set[tuple[str, str]] = set()
    for row in counts:
        key = (row.namespace, row.name)
        seen.add(key)
        QUEUED_RUNS.labels(*key).set(row.queued)
        ACTIVE_RUNS.labels(*key).set(row.active)
        WAITING_RUNS.labels(*key).set(row.waiting)
    for gauge in (QUEUED_RUNS, ACTIVE_RUNS, WAITING_RUNS):
        for family in gauge.collect():
            for sample in list(family.samples):
                key = (sample.labels["namespace"], sample.labels["task"])
                if key not in seen:
                    with contextlib.suppress(KeyError):
                        gauge.remove(*key)


# -- the API ----------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_latency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request duration by route template (`/v1/runs/{run_id}/steps`): a bounded label set.
    Unmatched paths share one label."""
    started = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    finally:
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "other"
        API_LATENCY.labels(template, request.method, str(code)).observe(
            time.perf_counter() - started
        )


# -- the Postgres pool ------------------------------------------------------------------------


class PoolCollector(Collector):
    """The connection pool's state at scrape time, from psycopg_pool's `get_stats()`."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self.stats = stats

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected on demand only: the registry need not call `collect`

    def collect(self) -> Iterator[Any]:
        stats = self.stats()
        gauges = (
            ("drover_db_pool_max_connections", "The pool's maximum size.", "pool_max"),
            ("drover_db_pool_connections", "Connections open in the pool.", "pool_size"),
            ("drover_db_pool_idle_connections", "Connections idle in the pool.", "pool_available"),
            ("drover_db_pool_waiting_requests", "Requests waiting for a connection.",
             "requests_waiting"),
        )  # fmt: skip
        for name, doc, key in gauges:
            yield GaugeMetricFamily(name, doc, value=stats.get(key, 0))
        counters = (
            ("drover_db_pool_requests", "Connections requested from the pool.", "requests_num"),
            ("drover_db_pool_requests_queued", "Requests that had to wait for a connection.",
             "requests_queued"),
            ("drover_db_pool_request_errors", "Requests that failed (timeout, pool closed).",
             "requests_errors"),
            ("drover_db_pool_connection_errors", "Failed attempts to open a connection.",
             "connections_errors"),
            ("drover_db_pool_connections_lost", "Connections found broken and discarded.",
             "connections_lost"),
        )  # fmt: skip
        for name, doc, key in counters:
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
        yield CounterMetricFamily(
            "drover_db_pool_request_wait_seconds",
            "Total time requests waited for a connection.",
            value=stats.get("requests_wait_ms", 0) / 1000,
        )


_pool_collector: PoolCollector | None = None


def watch_pool(stats: Callable[[], dict[str, int]]) -> None:
    """Export this pool's statistics (the latest pool registered wins)."""
    global _pool_collector
    if _pool_collector is not None:
        REGISTRY.unregister(_pool_collector)
    _pool_collector = PoolCollector(stats)
    REGISTRY.register(_pool_collector)
