"""Calling the operator's HTTP API from tests, and observing TaskRuns from the outside."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from lightkube import Client

from drover_operator.kube import TaskRunResource


def call(
    url: str,
    method: str,
    path: str,
    bearer: str | None = None,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) of one request."""
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path,
        method=method,
        data=data,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {bearer}"} if bearer else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def taskruns(client: Client, namespace: str) -> dict[str, dict[str, Any]]:
    """Every TaskRun in the namespace, as the API server has it (not as Drover records it):
    name -> {"uid", "labels", "spec", "status"}."""
    found = {}
    for item in client.list(TaskRunResource, namespace=namespace):
        assert item.metadata is not None and item.metadata.name is not None
        found[item.metadata.name] = {
            "uid": item.metadata.uid,
            "labels": item.metadata.labels or {},
            "annotations": item.metadata.annotations or {},
            "spec": dict(item.spec or {}),
            "status": dict(item.status or {}) if isinstance(item.status, dict) else {},
        }
    return found
