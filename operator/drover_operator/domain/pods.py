"""Pods for attempts: deterministic names, labels, and the manifest built from a Task.

A pod's name is derived from its run and attempt number only, so creating it again after a
crash finds the same pod ("AlreadyExists means adopt").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from drover.protocol import names
from drover.protocol.names import (
    ANNOTATION_RUN,
    ANNOTATION_TASK,
    API_VERSION,
    LABEL_ATTEMPT,
    LABEL_EXECUTION,
    LABEL_RUN,
    LABEL_RUN_UID,
    LABEL_TASK,
)
from drover_operator.crd import TaskSpec, parse_duration
from drover_operator.domain.attempts import CONTAINER
from drover_operator.domain.traces import traceparent

TOKEN_KEY = "token"
#: The key of the token Secret holding the CA that verifies the API's certificate.
CA_KEY = "ca.crt"
RUNNER_COMMAND = ["python", "-m", "drover.runner"]
#: On pods of a `concurrency.slotRelease: PodGone` Task: the slot is held until the pod is gone.
ANNOTATION_SLOT_RELEASE = "drover.dev/slot-release"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_MAX_NAME = 63  # pod names end up as hostnames: keep them to one DNS label's length


def _digest(value: str, size: int) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:size]


def label_value(value: str) -> str:
    """`value` if it is a valid label value, else a shortened form with a hash suffix."""
    if _LABEL_VALUE.match(value):
        return value
    head = re.sub(r"[^-A-Za-z0-9_.]", "-", value)[:53].strip("-_.")
    return f"{head}-{_digest(value, 9)}" if head else _digest(value, 9)


def pod_name(run_name: str, run_uid: str, attempt: int, resumed: int | None = None) -> str:
    """`<run>-a<n>`, and `<run>-a<n>-r<execution>` for an attempt resumed after a wait; for
    long run names, a prefix plus a hash of the run's UID."""
    suffix = f"-a{attempt}" if resumed is None else f"-a{attempt}-r{resumed}"
    if len(run_name) + len(suffix) <= _MAX_NAME:
        return run_name + suffix
    head = run_name[: _MAX_NAME - len(suffix) - 11].rstrip("-.")
    return f"{head}-{_digest(run_uid, 10)}{suffix}"


@dataclass(frozen=True)
class PodRequest:
    """Everything a pod for one attempt is built from."""

    namespace: str
    run_name: str
    run_uid: str
    task_name: str
    attempt: int
    max_attempts: int
    task: TaskSpec
    api_url: str = ""
    #: The execution (pod) of the run this is: `attempt` unless resumed after a wait.
    execution: int | None = None
    #: The pod's name as admission recorded it; default `<run>-a<attempt>`.
    pod: str | None = None
    #: What is left of the attempt's maxDuration; default the Task's.
    max_duration: timedelta | None = None
    # OTLP endpoint for the runner's step spans (`OTEL_EXPORTER_OTLP_ENDPOINT`); "": none.
    otlp_endpoint: str = ""
    # `DROVER_LOG_FORMAT` for the runner ("json"); "": its default.
    log_format: str = ""
    # SDK tasks: the Secret carrying the attempt's token (`domain.tokens.token_secret_name`).
    token_secret: str = ""
    # PEM certificates verifying the API's (an https `api_url`), given to the runner.
    api_ca: str = ""


def _pod(req: PodRequest) -> str:
    return req.pod or pod_name(req.run_name, req.run_uid, req.attempt)


def _execution(req: PodRequest) -> int:
    return req.execution if req.execution is not None else req.attempt


def _drover_env(req: PodRequest) -> list[dict[str, Any]]:
    values = {
        names.ENV_NAMESPACE: req.namespace,
        names.ENV_TASK: req.task_name,
        names.ENV_RUN_NAME: req.run_name,
        names.ENV_RUN_ID: req.run_uid,
        names.ENV_ATTEMPT: str(req.attempt),
        names.ENV_MAX_ATTEMPTS: str(req.max_attempts),
        # The attempt's span (W3C): what runs in the pod continues the run's trace.
        names.ENV_TRACEPARENT: traceparent(req.run_uid, _execution(req)),
    }
    if req.log_format:
        values[names.ENV_LOG_FORMAT] = req.log_format
    if req.otlp_endpoint and req.task.entrypoint:
        values["OTEL_EXPORTER_OTLP_ENDPOINT"] = req.otlp_endpoint
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    if req.task.entrypoint:
        if not req.token_secret:
            raise ValueError("PodRequest.token_secret is required for SDK tasks")
        env += [
            {"name": names.ENV_ENTRYPOINT, "value": req.task.entrypoint},
            {"name": names.ENV_API_URL, "value": req.api_url},
            {
                "name": names.ENV_TOKEN,
                "valueFrom": {"secretKeyRef": {"name": req.token_secret, "key": TOKEN_KEY}},
            },
        ]
        if req.api_ca:
            # With the token, in the Secret the operator creates: no volume, no ConfigMap to
            # copy into every namespace.
            ca = {"secretKeyRef": {"name": req.token_secret, "key": CA_KEY}}
            env.append({"name": names.ENV_API_CA, "valueFrom": ca})
    return env


def _labels(req: PodRequest) -> dict[str, str]:
    return {
        LABEL_RUN_UID: req.run_uid,
        LABEL_ATTEMPT: str(req.attempt),
        LABEL_EXECUTION: str(_execution(req)),
    }


def token_secret(req: PodRequest, token: str) -> dict[str, Any]:
    """The Secret `req.token_secret` holding the attempt's API token, owned by the TaskRun."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": req.token_secret,
            "namespace": req.namespace,
            "labels": _labels(req),
            "ownerReferences": [_owner(req)],
        },
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token, **({CA_KEY: req.api_ca} if req.api_ca else {})},
    }


def _owner(req: PodRequest) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TaskRun",
        "name": req.run_name,
        "uid": req.run_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_pod(req: PodRequest) -> dict[str, Any]:
    """The pod manifest for one attempt."""
    task = req.task
    name = _pod(req)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": task.image,
        "command": list(task.command) if task.command else RUNNER_COMMAND,
        "env": [*_drover_env(req), *(e.to_k8s() for e in task.env or [])],
    }
    optional = {
        "args": list(task.args) if task.args else None,
        "workingDir": task.working_dir,
        "imagePullPolicy": task.image_pull_policy,
        "envFrom": [e.to_k8s() for e in task.env_from] if task.env_from else None,
        "resources": task.resources.to_k8s() if task.resources else None,
    }
    container.update({k: v for k, v in optional.items() if v is not None})
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        # Task code talks to Drover's API, not to Kubernetes: no token unless the Task names
        # a ServiceAccount on purpose.
        "automountServiceAccountToken": bool(task.service_account_name),
    }
    if task.service_account_name:
        spec["serviceAccountName"] = task.service_account_name
    limit = req.max_duration
    if limit is None and task.timeouts.max_duration:
        limit = parse_duration(task.timeouts.max_duration)
    if limit is not None:
        # Backstop enforced by the kubelet even while the operator is down.
        spec["activeDeadlineSeconds"] = max(1, int(limit.total_seconds() + 0.999))
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    template = task.pod_template
    if template is not None:
        if template.metadata is not None:
            labels.update(template.metadata.labels or {})
            annotations.update(template.metadata.annotations or {})
        _merge_overlay(spec, template.spec_overlay())
    labels.update(
        {
            LABEL_TASK: label_value(req.task_name),
            LABEL_RUN: label_value(req.run_name),
            **_labels(req),
        }
    )
    annotations.update({ANNOTATION_RUN: req.run_name, ANNOTATION_TASK: req.task_name})
    if task.concurrency is not None and task.concurrency.slot_release == "PodGone":
        annotations[ANNOTATION_SLOT_RELEASE] = "PodGone"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": req.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [_owner(req)],
        },
        "spec": spec,
    }


def holds_slot(pod: dict[str, Any]) -> bool:
    """Whether the pod's attempt keeps its concurrency slot until the pod is gone."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(ANNOTATION_SLOT_RELEASE) == "PodGone")


def _merge_overlay(spec: dict[str, Any], overlay: dict[str, Any]) -> None:
    """Pod-spec overrides: fields replace ours; a container named `task` is merged into the
    task container (volumeMounts, securityContext, …); other containers are added."""
    for key, value in overlay.items():
        if key != "containers":
            spec[key] = value
            continue
        for extra in value:
            if extra.get("name") == CONTAINER:
                ours = spec["containers"][0]
                for field, field_value in extra.items():
                    if field == "env":
                        ours["env"] = [*ours.get("env", []), *field_value]
                    else:
                        ours[field] = field_value
            else:
                spec["containers"].append(extra)
