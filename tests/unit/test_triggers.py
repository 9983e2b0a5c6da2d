"""Triggered runs, as pure logic: requests checked before anything is created, the TaskRun a
request becomes, webhook signatures, why a run waits, and the client's calls."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

import pytest
from pydantic import ValidationError

from drover.client import calls
from drover.errors import ForbiddenError, InvalidRequestError, NotFoundError, UnavailableError
from drover.protocol.runs import BatchRequest, TriggerRequest, labels_as_tags, tag_filter
from drover_operator.crd import TaskSpec
from drover_operator.domain import webhooks
from drover_operator.domain.lifecycle import Slots
from drover_operator.domain.records import RunRecord
from drover_operator.domain.triggers import check, keyed_run_name, taskrun_spec
from drover_operator.domain.views import run_view, waiting

SCHEMA = {
    "type": "object",
    "required": ["customerId"],
    "properties": {"customerId": {"type": "string"}, "count": {"type": "integer"}},
}
TASK = TaskSpec.model_validate({"image": "x", "command": ["true"], "payloadSchema": SCHEMA})
NOW = dt.datetime.now(dt.UTC)


def request(**fields: Any) -> TriggerRequest:
    return TriggerRequest.model_validate({"payload": {"customerId": "c"}, **fields})


def test_a_request_becomes_a_taskrun_spec() -> None:
    spec = taskrun_spec(
        "sync",
        request(concurrencyKey="t-1", priority=5, delay="30s", ttl="1h", tags=["vip", "tier=2"]),
    )
    assert spec == {
        "taskRef": {"name": "sync"},
        "payload": {"customerId": "c"},
        "concurrencyKey": "t-1",
        "priority": 5,
        "delay": "30s",
        "ttl": "1h",
        "tags": {"vip": "", "tier": "2"},
    }
    assert check(TASK, spec) is None
    assert labels_as_tags(spec["tags"]) == ["tier=2", "vip"]


def test_a_payload_the_schema_refuses_is_named_with_its_field() -> None:
    problem = check(TASK, taskrun_spec("sync", request(payload={"customerId": 1})))
    assert problem is not None and problem.status == 422
    assert problem.message.startswith("payload.customerId:")
    batch = check(TASK, taskrun_spec("sync", request(payload={})), where="items[3].")
    assert batch is not None and batch.message.startswith("items[3].payload")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"idempotencyKey": "k" * 2049}, "idempotencyKey"),
        ({"idempotencyKey": ""}, "idempotencyKey"),
        ({"idempotencyKeyTTL": "30d"}, "idempotencyKeyTTL"),
        ({"idempotencyKeyTTL": "0s"}, "idempotencyKeyTTL"),
        ({"delay": "soon"}, "delay"),
        ({"ttl": "0s"}, "ttl"),
        ({"priority": 5000}, "priority"),
        ({"concurrencyKey": "has space"}, "concurrencyKey"),
        ({"concurrencyKey": "nul\x00"}, "concurrencyKey"),
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"tags": ["x" * 129]}, "tags"),
        ({"tags": ["a=1", "a=2"]}, "tags"),
        ({"tags": ["not a label"]}, "tags"),
        ({"metadata": {"big": "x" * 70_000}}, "metadata"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        request(**fields)
    assert field in str(refused.value)


def test_a_batch_has_at_most_a_thousand_items() -> None:
    assert len(BatchRequest.model_validate({"items": [{}] * 1000}).items) == 1000
    with pytest.raises(ValidationError):
        BatchRequest.model_validate({"items": [{}] * 1001})
    with pytest.raises(ValueError, match="at most 1000"):
        calls.batch("/v1", "ns", "t", [{}] * 1001)


def test_keyed_run_names_are_valid_names() -> None:
    name = keyed_run_name("t" * 63)
    assert len(name) <= 63 and name != keyed_run_name("t" * 63)


def test_webhook_signatures() -> None:
    key = bytes(range(32))
    body = b'{"a": 1}'
    expected = hmac.new(key.hex().encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.signature(key, body) == f"sha256={expected}"
    assert webhooks.valid(key, body, f"sha256={expected}")
    assert not webhooks.valid(key, body + b" ", f"sha256={expected}")
    assert not webhooks.valid(key, body, None)
    assert not webhooks.valid(bytes(32), body, f"sha256={expected}")


def _run(**fields: Any) -> RunRecord:
    base: dict[str, Any] = {
        "id": "u", "namespace": "ns", "name": "r", "task": "t", "generation": 1,
        "concurrency_key": None, "priority": 0, "payload": {"a": 1}, "tags": {"vip": ""},
        "phase": "Queued", "attempt": 0, "eligible_at": None, "expires_at": None,
        "created_at": NOW, "recorded_at": NOW, "started_at": None, "finished_at": None,
        "reason": None, "message": None, "error": None, "output": None,
        "cancel_requested": False, "deleted_at": None, "version": 1, "pushed_version": 0,
        "metadata": {}, "scheduled_at": None, "wait_reason": None, "wait_message": None,
    }  # fmt: skip
    return RunRecord(**{**base, **fields})


def test_a_run_says_why_it_waits() -> None:
    later = NOW + dt.timedelta(hours=1)
    delayed = waiting(_run(eligible_at=later))
    assert delayed is not None and delayed.reason == "Delayed" and delayed.eligible_at == later
    held = waiting(_run(wait_reason="ConcurrencyLimit", wait_message="limit 1 reached"), position=3)
    assert held is not None and (held.reason, held.position) == ("ConcurrencyLimit", 3)
    assert waiting(_run(phase="Running", attempt=1)) is None
    view = run_view(_run(), full=False)
    assert view.payload is None and view.tags == ["vip"]


def test_slots_say_which_limit_holds_a_run() -> None:
    spec = TaskSpec.model_validate(
        {"image": "x", "command": ["true"], "concurrency": {"limit": 2, "perKeyLimit": 1}}
    )
    slots = Slots.of(spec, 1, {"a": 1})
    key_full = slots.wait("a")
    assert key_full is not None and key_full.reason == "PerKeyLimit" and "key a" in key_full.message
    assert slots.take("b")
    full = slots.wait(None)
    assert full is not None and full.reason == "ConcurrencyLimit"
    assert "concurrency.limit 2" in full.message


def test_the_client_checks_a_trigger_before_sending_it() -> None:
    body = calls.trigger_body(
        {"k": 1}, idempotency_key="k", delay=dt.timedelta(seconds=90), tags={"vip": ""}
    )
    assert body == {"payload": {"k": 1}, "idempotencyKey": "k", "delay": "1m30s", "tags": ["vip"]}
    with pytest.raises(ValidationError):
        calls.trigger_body(tags=["a b"])
    page = calls.list_page("/v1", "ns", task="t", phase=["Failed"], tag="vip", since="1h")
    assert page.params == [
        ("limit", 100),
        ("task", "t"),
        ("phase", "Failed"),
        ("tag", "vip"),
        ("since", "1h"),
    ]
    assert tag_filter("vip") == ("vip", None) and tag_filter("tier=2") == ("tier", "2")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (403, ForbiddenError),
        (404, NotFoundError),
        (422, InvalidRequestError),
        (413, InvalidRequestError),
        (503, UnavailableError),
    ],
)
def test_refusals_become_errors_carrying_the_message(status: int, kind: type[Exception]) -> None:
    error = calls.error(status, {"type": "x", "message": "what is wrong"})
    assert isinstance(error, kind) and error.message == "what is wrong"
    assert calls.decode(b"<html>bad gateway</html>") == {"message": "<html>bad gateway</html>"}
