"""Malformed Task/TaskRun manifests, and the field each one must be refused for.

The table is shared: `tests/e2e/test_crd_validation.py` applies every case to the real API
server; here the pydantic models must refuse the same input (where Python can tell), so the
models and the generated CRD schema stay in agreement.

Update cases carry `before`: the API server must accept `before`, then refuse `manifest` as
a change to it (CEL transition rules, and the payload policy shipped with the CRDs). Python
cannot tell those (a model sees one object, not a transition): there both must be valid.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from drover_operator.crd import Task, TaskRun

API_VERSION = "drover.dev/v1alpha1"
#: Marks a key to delete from the base manifest.
DELETE: Any = object()

VALID_TASK_SPEC: dict[str, Any] = {
    "image": "ghcr.io/acme/tasks:1.0.0",
    "entrypoint": "examples.tasks:noop",
}
VALID_COMMAND_TASK_SPEC: dict[str, Any] = {
    "image": "python:3.12-slim",
    "command": ["python", "-c", "print('hi')"],
}
VALID_RUN_SPEC: dict[str, Any] = {"taskRef": {"name": "noop"}}


@dataclass(frozen=True)
class BadManifest:
    """One manifest that must be refused, naming `field` in the error."""

    id: str
    manifest: dict[str, Any]
    field: str
    message: str | None = None  # an extra fragment the API server's message must contain
    python: bool = True  # False: only the API server can tell (e.g. name length)
    before: dict[str, Any] | None = None  # an update: this is applied first, and accepted


def _patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def task(
    spec: dict[str, Any] | None = None,
    *,
    base: dict[str, Any] = VALID_TASK_SPEC,
    name: str = "bad-task",
) -> dict[str, Any]:
    """A Task manifest: `base` spec with `spec` deep-merged in."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {"name": name},
        "spec": _patch(base, spec or {}),
    }


def run(spec: dict[str, Any] | None = None, *, name: str = "bad-run") -> dict[str, Any]:
    """A TaskRun manifest: the valid base spec with `spec` deep-merged in."""
    return {
        "apiVersion": API_VERSION,
        "kind": "TaskRun",
        "metadata": {"name": name},
        "spec": _patch(VALID_RUN_SPEC, spec or {}),
    }


def _without_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "spec"}


#: The TaskRun every update case starts from (each under a name of its own).
RUN_BEFORE: dict[str, Any] = {
    "concurrencyKey": "tenant-1",
    "delay": "5m",
    "tags": {"tenant": "tenant-1"},
    "payload": {"customer": "cus_1", "lines": [{"sku": "a", "qty": 1}], "note": None},
}


def run_update(
    id: str,
    change: dict[str, Any],
    field: str,
    message: str = "immutable",
    *,
    before: dict[str, Any] = RUN_BEFORE,
) -> BadManifest:
    """A TaskRun created with spec `before`, then applied again with top-level spec fields
    replaced by `change` (`DELETE` removes one)."""
    name = id  # one object per case
    after = {k: v for k, v in {**before, **change}.items() if v is not DELETE}
    return BadManifest(
        id, run(after, name=name), field, message, python=False, before=run(before, name=name)
    )


B = BadManifest
CMD = VALID_COMMAND_TASK_SPEC
BAD_MANIFESTS: list[BadManifest] = [
    # --- Task: what to run
    B("task-no-spec", _without_spec(task()), "spec", "Required value"),
    B("image-missing", task({"image": DELETE}), "spec.image", "Required value"),
    B("image-empty", task({"image": ""}), "spec.image"),
    B("image-whitespace", task({"image": "acme/tasks 1.0"}), "spec.image"),
    B("image-not-string", task({"image": ["acme/tasks"]}), "spec.image"),
    B("pull-policy-enum", task({"imagePullPolicy": "Sometimes"}), "spec.imagePullPolicy"),
    B("entrypoint-and-command", task({"command": ["python"]}), "spec.command", "entrypoint"),
    B("neither-entrypoint-nor-command", task({"entrypoint": DELETE}), "spec", "entrypoint"),
    B("entrypoint-no-colon", task({"entrypoint": "examples.tasks.noop"}), "spec.entrypoint"),
    B("entrypoint-dash", task({"entrypoint": "my-tasks:noop"}), "spec.entrypoint"),
    B("entrypoint-two-colons", task({"entrypoint": "a:b:c"}), "spec.entrypoint"),
    B("args-without-command", task({"args": ["--fast"]}), "spec.args", "command"),
    B("command-empty-list", task(base=CMD, spec={"command": []}), "spec.command"),
    B("command-string", task(base=CMD, spec={"command": "python main.py"}), "spec.command"),
    B("command-empty-item", task(base=CMD, spec={"command": [""]}), "spec.command[0]"),
    B("workdir-empty", task({"workingDir": ""}), "spec.workingDir"),
    B("unknown-spec-field", task({"retries": 3}), "spec.retries", "not declared"),
    B("name-too-long", task(name="t" * 64), "metadata.name", python=False),
    # --- Task: retry
    B("max-attempts-zero", task({"retry": {"maxAttempts": 0}}), "spec.retry.maxAttempts"),
    B("max-attempts-huge", task({"retry": {"maxAttempts": 1000}}), "spec.retry.maxAttempts"),
    B("max-attempts-word", task({"retry": {"maxAttempts": "three"}}), "spec.retry.maxAttempts"),
    B("factor-below-one", task({"retry": {"factor": 0.5}}), "spec.retry.factor"),
    B("min-delay-prose", task({"retry": {"minDelay": "1 second"}}), "spec.retry.minDelay"),
    B("min-delay-number", task({"retry": {"minDelay": 5}}), "spec.retry.minDelay"),
    B("max-delay-days", task({"retry": {"maxDelay": "1d"}}), "spec.retry.maxDelay"),
    B("min-delay-zero", task({"retry": {"minDelay": "0s"}}), "spec.retry.minDelay"),
    B(
        "min-delay-above-max",
        task({"retry": {"minDelay": "5m", "maxDelay": "1m"}}),
        "spec.retry.minDelay",
        "maxDelay",
    ),
    B(
        "min-delay-above-default-max",
        task({"retry": {"minDelay": "2m"}}),
        "spec.retry.minDelay",
        "maxDelay",
    ),
    B("randomize-not-bool", task({"retry": {"randomize": "maybe"}}), "spec.retry.randomize"),
    B(
        "exit-code-out-of-range",
        task({"retry": {"nonRetryableExitCodes": [256]}}),
        "spec.retry.nonRetryableExitCodes[0]",
    ),
    B(
        "exit-code-duplicate",
        task({"retry": {"nonRetryableExitCodes": [2, 2]}}),
        "spec.retry.nonRetryableExitCodes",
    ),
    B("retry-unknown-field", task({"retry": {"backoff": "1s"}}), "spec.retry.backoff"),
    # --- Task: timeouts
    B("heartbeat-negative", task({"timeouts": {"heartbeat": "-5s"}}), "spec.timeouts.heartbeat"),
    B("heartbeat-too-short", task({"timeouts": {"heartbeat": "1s"}}), "spec.timeouts.heartbeat"),
    B("max-duration-zero", task({"timeouts": {"maxDuration": "0s"}}), "spec.timeouts.maxDuration"),
    B("pending-number", task({"timeouts": {"pending": 600}}), "spec.timeouts.pending"),
    B(
        "max-duration-overflow",
        task({"timeouts": {"maxDuration": "99999999999999h"}}),
        "spec.timeouts.maxDuration",
    ),
    # --- Task: concurrency, schedule, history
    B("limit-zero", task({"concurrency": {"limit": 0}}), "spec.concurrency.limit"),
    B(
        "per-key-above-limit",
        task({"concurrency": {"limit": 2, "perKeyLimit": 5}}),
        "spec.concurrency.perKeyLimit",
        "limit",
    ),
    B("per-key-zero", task({"concurrency": {"perKeyLimit": 0}}), "spec.concurrency.perKeyLimit"),
    B("cron-missing", task({"schedule": {"timezone": "UTC"}}), "spec.schedule.cron"),
    B("cron-prose", task({"schedule": {"cron": "every hour"}}), "spec.schedule.cron"),
    B("cron-empty", task({"schedule": {"cron": ""}}), "spec.schedule.cron"),
    B("cron-eight-fields", task({"schedule": {"cron": "0 * * * * * * *"}}), "spec.schedule.cron"),
    B(
        "concurrency-policy-enum",
        task({"schedule": {"cron": "@hourly", "concurrencyPolicy": "Skip"}}),
        "spec.schedule.concurrencyPolicy",
    ),
    B(
        "timezone-space",
        task({"schedule": {"cron": "@daily", "timezone": "Europe Berlin"}}),
        "spec.schedule.timezone",
    ),
    B(
        "starting-deadline-prose",
        task({"schedule": {"cron": "@daily", "startingDeadline": "soon"}}),
        "spec.schedule.startingDeadline",
    ),
    B(
        "suspend-not-bool",
        task({"schedule": {"cron": "@daily", "suspend": "nope"}}),
        "spec.schedule.suspend",
    ),
    B("keep-failed-negative", task({"history": {"keepFailed": -1}}), "spec.history.keepFailed"),
    B(
        "ttl-after-finished-prose",
        task({"history": {"ttlAfterFinished": "1 day"}}),
        "spec.history.ttlAfterFinished",
    ),
    B("payload-schema-not-object", task({"payloadSchema": "string"}), "spec.payloadSchema"),
    # --- Task: pod
    # Server-side apply reports a list-map entry without its key on the list: `.spec.env:
    # element 0: ... omits all key fields ["name"]`.
    B("env-no-name", task({"env": [{"value": "x"}]}), "spec.env", '"name"'),
    B("env-bad-name", task({"env": [{"name": "1 BAD", "value": "x"}]}), "spec.env[0].name"),
    B("env-reserved-name", task({"env": [{"name": "DROVER_RUN_ID"}]}), "spec.env[0].name"),
    B(
        "env-value-and-value-from",
        task(
            {
                "env": [
                    {
                        "name": "A",
                        "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            }
        ),
        "spec.env[0].valueFrom",
        "mutually exclusive",
    ),
    B("env-empty-value-from", task({"env": [{"name": "A", "valueFrom": {}}]}), "spec.env[0]"),
    B(
        "env-secret-ref-no-key",
        task({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}),
        "spec.env[0].valueFrom.secretKeyRef.key",
    ),
    B("env-duplicate", task({"env": [{"name": "A"}, {"name": "A"}]}), "spec.env"),
    B(
        "env-from-both",
        task({"envFrom": [{"configMapRef": {"name": "c"}, "secretRef": {"name": "s"}}]}),
        "spec.envFrom[0]",
    ),
    B("cpu-limit-word", task({"resources": {"limits": {"cpu": "lots"}}}), "spec.resources.limits"),
    B(
        "memory-request-negative",
        task({"resources": {"requests": {"memory": "-1Gi"}}}),
        "spec.resources.requests",
    ),
    B(
        "request-above-limit",
        task({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
        "spec.resources.requests",
        "limit",
    ),
    B("service-account-name", task({"serviceAccountName": "Bad_Name"}), "spec.serviceAccountName"),
    B(
        "toleration-effect-enum",
        task({"podTemplate": {"spec": {"tolerations": [{"effect": "Sometimes"}]}}}),
        "spec.podTemplate.spec.tolerations[0].effect",
    ),
    B(
        "volume-without-name",
        task({"podTemplate": {"spec": {"volumes": [{"emptyDir": {}}]}}}),
        "spec.podTemplate.spec.volumes",
        '"name"',
    ),
    B(
        "pod-label-not-string",
        task({"podTemplate": {"metadata": {"labels": {"team": 7}}}}),
        "spec.podTemplate.metadata.labels.team",
    ),
    # --- TaskRun
    B("run-no-task-ref", run({"taskRef": DELETE}), "spec.taskRef", "Required value"),
    B("run-task-ref-string", run({"taskRef": "noop"}), "spec.taskRef"),
    B("run-task-ref-no-name", run({"taskRef": {"name": DELETE}}), "spec.taskRef.name"),
    B("run-task-ref-empty", run({"taskRef": {"name": ""}}), "spec.taskRef.name"),
    B("run-task-ref-invalid", run({"taskRef": {"name": "Sync Customer"}}), "spec.taskRef.name"),
    B("run-priority-too-high", run({"priority": 5000}), "spec.priority"),
    B("run-priority-word", run({"priority": "high"}), "spec.priority"),
    B("run-delay-prose", run({"delay": "5 minutes"}), "spec.delay"),
    B(
        "run-delay-and-not-before",
        run({"delay": "5m", "notBefore": "2030-01-01T00:00:00Z"}),
        "spec.notBefore",
        "delay",
    ),
    B("run-not-before-prose", run({"notBefore": "tomorrow"}), "spec.notBefore"),
    B("run-ttl-zero", run({"ttl": "0s"}), "spec.ttl"),
    B("run-cancel-not-bool", run({"cancel": "please"}), "spec.cancel"),
    B("run-concurrency-key-empty", run({"concurrencyKey": ""}), "spec.concurrencyKey"),
    B("run-concurrency-key-space", run({"concurrencyKey": "tenant 42"}), "spec.concurrencyKey"),
    B("run-concurrency-key-nul", run({"concurrencyKey": "tenant\x00"}), "spec.concurrencyKey"),
    B("run-concurrency-key-control", run({"concurrencyKey": "t\x1b[0m"}), "spec.concurrencyKey"),
    B("run-tag-key", run({"tags": {"has space": "x"}}), "spec.tags"),
    B("run-tag-value-type", run({"tags": {"tenant": 42}}), "spec.tags.tenant"),
    B("run-tag-value-pattern", run({"tags": {"tenant": "a b"}}), "spec.tags.tenant"),
    B("run-too-many-tags", run({"tags": {f"t{i}": "x" for i in range(33)}}), "spec.tags"),
    B("run-unknown-field", run({"taskref": {"name": "noop"}}), "spec.taskref", "not declared"),
    B("run-name-too-long", run(name="r" * 254), "metadata.name", python=False),
    # --- TaskRun updates: the spec is immutable except `cancel`, which only goes to true
    run_update("update-task-ref", {"taskRef": {"name": "other"}}, "spec.taskRef.name"),
    run_update("update-priority", {"priority": 7}, "spec.priority"),
    run_update("update-concurrency-key", {"concurrencyKey": "tenant-2"}, "spec.concurrencyKey"),
    run_update("update-concurrency-key-removed", {"concurrencyKey": DELETE}, "spec.concurrencyKey"),
    run_update("update-delay", {"delay": "10m"}, "spec.delay"),
    run_update(
        "update-delay-to-not-before",
        {"notBefore": "2030-01-01T00:00:00Z", "delay": DELETE},
        "spec.notBefore",
    ),
    run_update("update-ttl-added", {"ttl": "1h"}, "spec.ttl"),
    run_update("update-tags", {"tags": {"tenant": "tenant-2"}}, "spec.tags"),
    run_update(
        "update-cancel-undone",
        {"cancel": False},
        "spec.cancel",
        "cannot be set back to false",
        before={**RUN_BEFORE, "cancel": True},
    ),
    # The payload is what the run received: `kubectl get -o yaml` must keep showing it.
    run_update("update-payload", {"payload": {"customer": "cus_2"}}, "spec.payload"),
    run_update(
        "update-payload-deep",
        {"payload": {"customer": "cus_1", "lines": [{"sku": "a", "qty": 2}], "note": None}},
        "spec.payload",
    ),
    run_update("update-payload-type", {"payload": "cus_1"}, "spec.payload"),
    run_update("update-payload-removed", {"payload": DELETE}, "spec.payload"),
    run_update(
        "update-payload-added",
        {"payload": {"customer": "cus_1"}},
        "spec.payload",
        before={k: v for k, v in RUN_BEFORE.items() if k != "payload"},
    ),
    run_update(  # cancel may change; the payload still may not, in the same write
        "update-payload-with-cancel",
        {"cancel": True, "payload": {"customer": "cus_2"}},
        "spec.payload",
    ),
]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in BAD_MANIFESTS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30


@pytest.mark.parametrize("manifest", [task(), task(base=CMD), run()])
def test_base_manifests_are_valid(manifest: dict[str, Any]) -> None:
    model = Task if manifest["kind"] == "Task" else TaskRun
    model.model_validate(manifest)


@pytest.mark.parametrize(
    "case", [c for c in BAD_MANIFESTS if c.before is not None], ids=lambda c: str(c.id)
)
def test_update_cases_are_valid_on_their_own(case: BadManifest) -> None:
    # Only the change is wrong, so the API server's refusal is about the transition.
    assert case.before is not None
    for manifest in (case.before, case.manifest):
        TaskRun.model_validate(manifest)


@pytest.mark.parametrize("case", [c for c in BAD_MANIFESTS if c.python], ids=lambda c: str(c.id))
def test_models_refuse_bad_manifest(case: BadManifest) -> None:
    model = Task if case.manifest["kind"] == "Task" else TaskRun
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(case.manifest)
    # Some error must point at the field or one of its parents (model-level rules).
    locations = [_loc(error["loc"]) for error in excinfo.value.errors()]
    field = case.field
    assert any(field.startswith(loc) or loc.startswith(field) for loc in locations), locations
