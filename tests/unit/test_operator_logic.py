"""Pure operator logic: pod names and manifests, outcomes, retry decisions, status, checks."""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import pytest

from drover_operator.crd import TaskSpec
from drover_operator.crd.common import Condition
from drover_operator.domain.attempts import (
    AttemptState,
    Outcome,
    pending_reason,
    pod_outcome,
    started_at,
)
from drover_operator.domain.lifecycle import Slots, end_of_attempt, next_phase
from drover_operator.domain.pods import PodRequest, build_pod, label_value, pod_name, token_secret
from drover_operator.domain.records import AttemptSummary, UnpushedRun
from drover_operator.domain.status import taskrun_status
from drover_operator.domain.tokens import (
    TOKEN_SECRET_PREFIX,
    attempt_token,
    secret_matches,
    token_secret_name,
    verify,
    waitpoint_secret,
)
from drover_operator.domain.validation import payload_problem, task_problem

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def spec(**fields: Any) -> TaskSpec:
    return TaskSpec.model_validate({"image": "img", "command": ["true"], **fields})


def test_pod_names_are_deterministic_and_short() -> None:
    assert pod_name("nightly", "uid-1", 2) == "nightly-a2"
    long = "x" * 200
    first = pod_name(long, "uid-1", 1)
    assert first == pod_name(long, "uid-1", 1)
    assert len(first) <= 63 and first.endswith("-a1") and DNS_LABEL.match(first)
    assert pod_name(long, "uid-2", 1) != first  # a recreated run never collides


def test_a_resumed_attempt_gets_its_own_pod_and_what_is_left_of_max_duration() -> None:
    task = spec(command=["sh"], timeouts={"maxDuration": "90s"})
    request = PodRequest(
        "ns",
        "run",
        "uid",
        "t",
        2,
        3,
        task,
        execution=5,
        pod=pod_name("run", "uid", 2, 5),
        max_duration=dt.timedelta(seconds=30),
    )
    pod = build_pod(request)
    assert pod["metadata"]["name"] == "run-a2-r5"
    assert pod["metadata"]["labels"]["drover.dev/attempt"] == "2"
    assert pod["metadata"]["labels"]["drover.dev/execution"] == "5"
    assert pod["spec"]["activeDeadlineSeconds"] == 30
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["DROVER_ATTEMPT"]["value"] == "2"
    assert token_secret(request, "token")["metadata"]["labels"]["drover.dev/execution"] == "5"


def test_label_values_are_valid_for_any_name() -> None:
    assert label_value("short") == "short"
    value = label_value("a." * 100)
    assert len(value) <= 63 and re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value)


def test_pod_manifest_from_a_task() -> None:
    task = spec(
        command=["sh", "-c", "work"],
        args=["x"],
        env=[{"name": "A", "value": "1"}],
        serviceAccountName="worker",
        resources={"limits": {"cpu": "1"}},
        timeouts={"maxDuration": "90s"},
        podTemplate={
            "metadata": {"labels": {"team": "shop"}},
            "spec": {"nodeSelector": {"disk": "ssd"}},
        },
    )
    pod = build_pod(PodRequest("ns", "run", "uid", "t", 2, 3, task))
    meta, body = pod["metadata"], pod["spec"]
    assert meta["name"] == "run-a2"
    assert meta["labels"] == {
        "team": "shop",
        "drover.dev/task": "t",
        "drover.dev/run": "run",
        "drover.dev/run-uid": "uid",
        "drover.dev/attempt": "2",
        "drover.dev/execution": "2",
    }
    assert meta["ownerReferences"][0]["uid"] == "uid"
    assert meta["ownerReferences"][0]["controller"] is True
    assert body["restartPolicy"] == "Never" and body["activeDeadlineSeconds"] == 90
    assert body["serviceAccountName"] == "worker"
    assert body["automountServiceAccountToken"] is True
    assert body["nodeSelector"] == {"disk": "ssd"}
    [container] = body["containers"]
    assert container["command"] == ["sh", "-c", "work"] and container["args"] == ["x"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["A"] == "1" and env["DROVER_ATTEMPT"] == "2" and env["DROVER_RUN_ID"] == "uid"
    assert container["resources"] == {"limits": {"cpu": "1"}}


def test_sdk_task_pods_run_the_runner_without_api_access() -> None:
    task = TaskSpec.model_validate({"image": "img", "entrypoint": "shop.tasks:sync"})
    secret_name = "drover-token-run-a1-0123456789abcdef"
    request = PodRequest(
        "ns", "run", "uid", "t", 1, 3, task, api_url="http://api:8080", token_secret=secret_name
    )
    pod = build_pod(request)
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "drover.runner"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DROVER_ENTRYPOINT"]["value"] == "shop.tasks:sync"
    assert env["DROVER_API_URL"]["value"] == "http://api:8080"
    # The attempt's credential comes from its own Secret, never inline.
    secret_ref = env["DROVER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": secret_name, "key": "token"}
    secret = token_secret(request, "tok")
    assert secret["metadata"]["name"] == secret_name
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid"
    assert pod["spec"]["automountServiceAccountToken"] is False
    # Without the Secret's name there is no SDK pod (it would reference no Secret).
    with pytest.raises(ValueError, match="token_secret"):
        build_pod(PodRequest("ns", "run", "uid", "t", 1, 3, task))


def test_token_secret_names_cannot_be_known_without_the_key() -> None:
    run_id = "0190c5d2-0000-4000-8000-000000000001"
    name = token_secret_name(b"k" * 32, run_id, 1, "run-a1")
    assert re.fullmatch(r"drover-token-run-a1-[0-9a-f]{16}", name)
    assert name.startswith(TOKEN_SECRET_PREFIX)
    # Another key, attempt or run: another name; the same inputs: the same name (idempotent).
    assert name == token_secret_name(b"k" * 32, run_id, 1, "run-a1")
    others = {
        token_secret_name(b"j" * 32, run_id, 1, "run-a1"),
        token_secret_name(b"k" * 32, run_id, 2, "run-a1"),
        token_secret_name(b"k" * 32, run_id.replace("1", "2"), 1, "run-a1"),
    }
    assert name not in others and len(others) == 3
    # The longest pod name still gives a valid Secret name (a DNS subdomain).
    long_name = token_secret_name(b"k" * 32, run_id, 1, "p" * 63)
    assert len(long_name) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", long_name)


def test_tokens_are_verified_with_the_key_alone() -> None:
    run_id = "0190c5d2-0000-4000-8000-000000000001"
    key = b"k" * 32
    token = attempt_token(key, run_id, 3)
    assert verify(key, token) == (run_id, 3)
    assert verify(b"j" * 32, token) is None  # another key
    mac = token.rsplit(".", 1)[1]
    for forged in (
        f"{run_id}.4.{mac}",  # another attempt
        f"{run_id.upper()}.3.{mac}",  # not the canonical form
        f"{run_id}.03.{mac}",
        f"{run_id}.\u0663.{mac}",  # a non-ASCII digit
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "\u00e9",
        "",
        "a.b.c",
    ):
        assert verify(key, forged) is None, forged


def test_waitpoint_secrets_refuse_any_other_string_without_raising() -> None:
    key = b"k" * 32
    token_id = "0190c5d2-0000-4000-8000-000000000002"
    secret = waitpoint_secret(key, token_id)
    assert secret_matches(key, token_id, secret)
    for wrong in ("", secret[:-1], secret + "A", "\u00d0#\u00fd\u00ad", secret[:-1] + "\u00e9"):
        assert not secret_matches(key, token_id, wrong), wrong
    assert not secret_matches(key, "0190c5d2-0000-4000-8000-000000000003", secret)


def _pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"status": {"phase": phase, **status}}


def _terminated(code: int, reason: str = "Error") -> dict[str, Any]:
    return {
        "containerStatuses": [
            {
                "name": "task",
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": reason,
                        "startedAt": "2026-01-01T00:00:01Z",
                    }
                },
            }
        ]
    }


def test_pod_outcomes() -> None:
    task = spec(retry={"nonRetryableExitCodes": [2]})
    assert pod_outcome(_pod("Running"), task) is None
    ok = pod_outcome(_pod("Succeeded"), task)
    assert ok is not None and ok.state == "Succeeded"
    failed = pod_outcome(_pod("Failed", **_terminated(1)), task)
    assert failed == Outcome(
        AttemptState.FAILED, "Error", "exit code 1", retryable=True, exit_code=1
    )
    final = pod_outcome(_pod("Failed", **_terminated(2)), task)
    assert final is not None and not final.retryable
    timed = pod_outcome(_pod("Failed", reason="DeadlineExceeded"), task)
    assert timed is not None and timed.state == "TimedOut"
    assert started_at(_pod("Failed", **_terminated(1))) == dt.datetime(
        2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC
    )


def test_pending_reasons_name_the_cause() -> None:
    unschedulable = _pod(
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes: Insufficient cpu",
            }
        ],
    )
    assert pending_reason(unschedulable) == ("Unschedulable", "0/1 nodes: Insufficient cpu")
    config = _pod(
        "Pending",
        containerStatuses=[
            {
                "name": "task",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "x" not found',
                    }
                },
            }
        ],
    )
    assert pending_reason(config) == ("CreateContainerConfigError", 'secret "x" not found')
    assert pending_reason(None)[0] == "PodMissing"


def test_retry_policy_decides_the_next_step() -> None:
    task = spec(
        retry={
            "maxAttempts": 3,
            "minDelay": "2s",
            "factor": 3,
            "maxDelay": "10s",
            "randomize": False,
        }
    )
    failure = Outcome(AttemptState.FAILED, "Error", "exit code 1", retryable=True, exit_code=1)
    assert next_phase(task, 1, failure) == ("Retrying", dt.timedelta(seconds=2))
    assert next_phase(task, 2, failure) == ("Retrying", dt.timedelta(seconds=6))
    assert next_phase(task, 3, failure) == ("Failed", None)
    timeout = Outcome(AttemptState.TIMED_OUT, "TimedOut", "", retryable=True)
    assert next_phase(task, 3, timeout) == ("TimedOut", None)
    final = Outcome(AttemptState.FAILED, "Error", "", retryable=False, exit_code=2)
    assert next_phase(task, 1, final) == ("Failed", None)
    jittered = spec(retry={"minDelay": "1s", "randomize": True})
    _, delay = next_phase(jittered, 1, failure, random.Random(1))
    assert delay is not None and 1 <= delay.total_seconds() < 2


def test_an_attempts_end_records_the_error_and_the_history() -> None:
    task = spec(retry={"maxAttempts": 2, "minDelay": "2s", "randomize": False})
    failure = Outcome(
        AttemptState.FAILED, "Error", "exit code 1", retryable=True, exit_code=1, traceback="tb"
    )
    retry = end_of_attempt(task, 1, failure)
    assert retry.retrying and retry.retry_in == dt.timedelta(seconds=2)
    assert retry.error == {
        "type": "Error",
        "message": "exit code 1",
        "retryable": True,
        "traceback": "tb",
    }
    assert [(e.reason, e.message) for e in retry.events] == [
        ("AttemptFailed", "attempt 1 failed: exit code 1"),
        ("RetryScheduled", "attempt 2 in 2.0s"),
    ]
    last = end_of_attempt(task, 2, failure)
    assert (last.phase, [e.reason for e in last.events]) == ("Failed", ["Failed"])
    assert last.events[0].message == "run failed after 2 attempt(s): exit code 1"
    done = end_of_attempt(task, 1, Outcome(AttemptState.SUCCEEDED, "Completed", "", False))
    assert (done.phase, done.error, done.events[0].type) == ("Succeeded", None, "Normal")


def test_slots_respect_the_limit_and_the_per_key_limit() -> None:
    slots = Slots.of(spec(concurrency={"limit": 3, "perKeyLimit": 1}), 1, {"a": 1})
    assert not slots.take("a")  # key a is at its limit
    assert slots.take("b") and not slots.take("b")
    assert slots.take(None)
    assert slots.full and not slots.take("c")
    unlimited = Slots.of(spec(), 50, {})
    assert not unlimited.full and all(unlimited.take("k") for _ in range(1000))


def _run(**fields: Any) -> UnpushedRun:
    base: dict[str, Any] = {
        "id": "u",
        "namespace": "ns",
        "name": "r",
        "task": "t",
        "generation": 1,
        "concurrency_key": None,
        "priority": 0,
        "payload": None,
        "tags": None,
        "phase": "Queued",
        "attempt": 0,
        "eligible_at": None,
        "expires_at": None,
        "created_at": NOW,
        "recorded_at": NOW,
        "started_at": None,
        "finished_at": None,
        "reason": None,
        "message": None,
        "error": None,
        "output": None,
        "cancel_requested": False,
        "deleted_at": None,
        "version": 1,
        "pushed_version": 0,
        "metadata": {},
        "scheduled_at": None,
        "wait_reason": None,
        "wait_message": None,
        "task_exists": True,
        "task_invalid": None,
    }
    return UnpushedRun(**{**base, **fields})


def test_taskrun_status_conditions() -> None:
    missing = taskrun_status(_run(task_exists=False), [], output_limit=10)
    assert missing["conditions"][0]["reason"] == "TaskNotFound"
    assert 'Task "t" not found in namespace "ns"' in missing["conditions"][0]["message"]
    done = taskrun_status(
        _run(phase="Succeeded", finished_at=NOW, output={"k": "v" * 50}), [], output_limit=10
    )
    assert done["conditions"][0]["status"] == "True"
    assert done["outputTruncated"] is True and len(done["output"]) == 10
    attempt = AttemptSummary(
        number=1,
        try_number=1,
        pod_name="r-a1",
        state="Failed",
        admitted_at=NOW,
        started_at=NOW,
        finished_at=NOW,
        exit_code=1,
        reason="Error",
        message="exit code 1",
    )
    retrying = taskrun_status(
        _run(phase="Retrying", attempt=1, eligible_at=NOW, reason="Error"),
        [attempt],
        output_limit=10,
    )
    assert retrying["nextAttemptTime"] and retrying["attempts"][0]["exitCode"] == 1


@pytest.mark.parametrize(
    ("phase", "reason", "shown"),
    [
        ("Failed", "ValueError", "ValueError"),
        ("Failed", "_PrivateError", "PrivateError"),
        ("Failed", "requests.exceptions.HTTPError", "requestsexceptionsHTTPError"),
        ("Failed", "Ошибка", "Failed"),
        ("Failed", "0", "Failed"),
        ("Retrying", "9_lives:", "lives"),
        ("Retrying", "9_:", "Retrying"),
        ("Retrying", "E" * 2000, "E" * 1024),
        ("Retrying", "E" * 1023 + ":x", "E" * 1023),
    ],
)
def test_a_runner_reason_the_condition_cannot_hold_is_made_valid(
    phase: str, reason: str, shown: str
) -> None:
    # A runner's failure reason is its exception's class name: the TaskRun's condition must
    # still be one the API server accepts (the CRD's pattern), or the status is never written.
    status = taskrun_status(
        _run(phase=phase, reason=reason, finished_at=NOW if phase == "Failed" else None),
        [],
        output_limit=10,
    )
    [succeeded] = status["conditions"]
    assert succeeded["reason"] == shown
    Condition.model_validate(succeeded)


def test_operator_side_checks() -> None:
    # A bad schedule stops only scheduled runs (tests/unit/test_schedules.py): runs created
    # directly still start, so it is no problem of the Task's.
    assert task_problem(spec(schedule={"cron": "* * * * *", "timezone": "Mars/Olympus"})) is None
    assert task_problem(spec(payloadSchema={"type": "nonsense"})) is not None
    typed = spec(payloadSchema={"type": "object", "properties": {"n": {"type": "integer"}}})
    assert payload_problem(typed, {"n": 1}) is None
    problem = payload_problem(typed, {"n": "x"})
    assert problem is not None and problem.startswith("payload.n:")
