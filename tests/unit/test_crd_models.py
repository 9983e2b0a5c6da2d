"""The pydantic models as the operator uses them: parsing kopf's camelCase spec dicts,
defaults, helpers, and serialising back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

import pytest
from pydantic import ValidationError

from drover.protocol.phases import FINISHED_PHASES
from drover.protocol.phases import Phase as ProtocolPhase
from drover_operator.crd import (
    Phase,
    TaskRunSpec,
    TaskRunStatus,
    TaskSpec,
    TaskStatus,
)
from drover_operator.crd.common import parse_quantity
from drover_operator.crd.task import RetryPolicy


def test_minimal_task_gets_documented_defaults() -> None:
    spec = TaskSpec.model_validate({"image": "acme/tasks:1", "entrypoint": "shop.tasks:sync"})
    assert spec.retry.max_attempts == 3
    assert spec.retry.factor == 2
    assert (spec.retry.min_delay, spec.retry.max_delay) == ("1s", "60s")
    assert spec.retry.randomize is True
    assert spec.timeouts.heartbeat == "90s"
    assert spec.timeouts.max_duration is None and spec.timeouts.pending is None
    assert spec.concurrency is None and spec.schedule is None


def test_schedule_defaults() -> None:
    spec = TaskSpec.model_validate(
        {"image": "i", "entrypoint": "m:f", "schedule": {"cron": "0 * * * *"}}
    )
    assert spec.schedule is not None
    assert spec.schedule.timezone == "UTC"
    assert spec.schedule.concurrency_policy == "Allow"
    assert spec.schedule.suspend is False


def test_snake_case_names_and_camel_case_wire_format() -> None:
    spec = TaskSpec(
        image="i",
        command=["run"],
        service_account_name="worker",
        retry=RetryPolicy(max_attempts=5, non_retryable_exit_codes=[2]),
    )
    wire = spec.to_k8s()
    assert wire["serviceAccountName"] == "worker"
    assert wire["retry"]["maxAttempts"] == 5
    assert wire["retry"]["nonRetryableExitCodes"] == [2]
    assert "entrypoint" not in wire  # unset fields are omitted
    assert TaskSpec.model_validate(wire) == spec


def test_backoff_follows_the_documented_formula() -> None:
    retry = RetryPolicy(min_delay="1s", max_delay="10s", factor=2, randomize=False)
    delays = [retry.backoff(n) for n in range(1, 7)]
    assert delays == [timedelta(seconds=s) for s in (1, 2, 4, 8, 10, 10)]
    jittered = RetryPolicy(min_delay="2s", max_delay="1m").backoff(1, jitter=1.5)
    assert jittered == timedelta(seconds=3)


def test_pod_template_passes_unknown_pod_fields_through() -> None:
    spec = TaskSpec.model_validate(
        {
            "image": "i",
            "entrypoint": "m:f",
            "podTemplate": {
                "spec": {
                    "hostNetwork": True,
                    "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
                    "tolerations": [{"key": "gpu", "operator": "Exists"}],
                }
            },
        }
    )
    assert spec.pod_template is not None
    overlay = spec.pod_template.spec_overlay()
    assert overlay["hostNetwork"] is True
    assert overlay["volumes"] == [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert overlay["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        (2, Decimal(2)),
        ("250m", Decimal("0.25")),
        ("1Gi", Decimal(2**30)),
        ("1.5G", Decimal("1.5e9")),
        ("1e3", Decimal(1000)),
    ],
)
def test_parse_quantity(quantity: int | str, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


def test_requests_may_equal_limits_across_units() -> None:
    TaskSpec.model_validate(
        {
            "image": "i",
            "entrypoint": "m:f",
            "resources": {"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": 1}},
        }
    )
    with pytest.raises(ValidationError, match="less than or equal to its limit"):
        TaskSpec.model_validate(
            {
                "image": "i",
                "entrypoint": "m:f",
                "resources": {"requests": {"cpu": "1001m"}, "limits": {"cpu": 1}},
            }
        )


def test_taskrun_spec_defaults_and_any_json_payload() -> None:
    for payload in ({"a": [1, {"b": None}]}, [1, 2], "text", 3.5, True):
        spec = TaskRunSpec.model_validate({"taskRef": {"name": "sync"}, "payload": payload})
        assert spec.payload == payload
        assert spec.priority == 0 and spec.cancel is False
    not_before = TaskRunSpec.model_validate(
        {"taskRef": {"name": "x"}, "notBefore": "2030-01-01T00:00:00Z"}
    ).not_before
    assert not_before == datetime(2030, 1, 1, tzinfo=UTC)


def test_statuses_parse_what_the_operator_writes() -> None:
    now = "2030-01-01T00:00:00Z"
    condition = {
        "type": "Succeeded",
        "status": "False",
        "reason": "BackoffLimitReached",
        "message": "3 of 3 attempts failed",
        "lastTransitionTime": now,
    }
    status = TaskRunStatus.model_validate(
        {
            "phase": "Failed",
            "attempt": 3,
            "attempts": [{"number": n, "exitCode": 1, "reason": "Error"} for n in (1, 2, 3)],
            "conditions": [condition],
            "error": {"type": "ExitCode", "message": "exit code 1", "retryable": True},
            "output": None,
            "steps": {"completed": 2},
        }
    )
    assert status.phase in FINISHED_PHASES
    assert status.to_k8s()["conditions"][0]["lastTransitionTime"] == now
    with pytest.raises(ValidationError, match="unique"):
        TaskStatus.model_validate({"conditions": [condition, condition]})


def test_the_crds_phases_are_the_protocols_phases() -> None:
    assert get_args(Phase) == tuple(ProtocolPhase)
    assert set(FINISHED_PHASES) < set(get_args(Phase))
    assert len(get_args(Phase)) == 10
