"""The run API's OpenAPI document, built from the wire models.

`python -m drover_operator.api.openapi` writes `docs/openapi.json`; a test fails when the
committed file differs from what this builds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from drover import __version__
from drover.protocol import PROTOCOL_HEADER
from drover.protocol.history import LogPage, RunTimeline, TaskSummaryList
from drover.protocol.runs import BatchRequest, ReplayRequest, RunList, RunView, TriggerRequest
from drover.protocol.wire import (
    Completion,
    Failure,
    HeartbeatReply,
    LogBatch,
    MetadataPatch,
    Problem,
    RunContext,
    StepBatch,
)
from drover.protocol.workflows import (
    ChildBatchRequest,
    Children,
    ChildRequest,
    Token,
    TokenCompletion,
    TokenList,
    TokenRequest,
    TokenState,
    WaitReply,
    WaitRequest,
)

_MODELS: list[type[BaseModel]] = [
    RunContext,
    StepBatch,
    Completion,
    Failure,
    MetadataPatch,
    LogBatch,
    HeartbeatReply,
    Problem,
    TriggerRequest,
    BatchRequest,
    ReplayRequest,
    RunView,
    RunList,
    ChildRequest,
    ChildBatchRequest,
    Children,
    WaitRequest,
    WaitReply,
    TokenRequest,
    Token,
    TokenCompletion,
    TokenState,
    TokenList,
    RunTimeline,
    LogPage,
    TaskSummaryList,
]


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema
    return schemas


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


_ERRORS = {
    str(code): {"description": text, **_json("Problem")}
    for code, text in [
        (400, "malformed JSON, or a protocol version this operator does not serve"),
        (401, "missing or invalid token"),
        (403, "the token belongs to another run"),
        (404, "no such run"),
        (409, "the attempt is no longer active (or, for steps, another step at a stored position)"),
        (413, "too large"),
        (422, "the body does not match the schema"),
        (503, "the database is briefly unavailable: retry"),
    ]
}


def _op(summary: str, ok: dict[str, Any], body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_ERRORS}}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


def _object(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def document() -> dict[str, Any]:
    run_id = {
        "name": "run_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    paths: dict[str, dict[str, Any]] = {
        "/v1/runs/{run_id}/context": {
            "get": _op(
                "The attempt's context: payload, metadata, completed steps",
                {"description": "context", **_json("RunContext")},
            )
        },
        "/v1/runs/{run_id}/heartbeat": {
            "post": _op(
                "Report that the attempt is alive; `cancel` asks it to stop",
                {"description": "beat recorded", **_json("HeartbeatReply")},
            )
        },
        "/v1/runs/{run_id}/steps": {
            "put": _op(
                "Store step checkpoints (writing the identical step again always succeeds)",
                _object("stored"),
                "StepBatch",
            )
        },
        "/v1/runs/{run_id}/complete": {
            "post": _op(
                "Finish the attempt successfully with the run's output",
                _object("finished"),
                "Completion",
            )
        },
        "/v1/runs/{run_id}/fail": {
            "post": _op(
                "Fail the attempt (retried per the Task's policy when retryable)",
                _object("recorded"),
                "Failure",
            )
        },
        "/v1/runs/{run_id}/metadata": {
            "get": _op("The run's metadata", _object("metadata")),
            "patch": _op("Set metadata keys (null deletes)", _object("metadata"), "MetadataPatch"),
        },
        "/v1/runs/{run_id}/logs": {
            "post": _op("Append log lines from the task", _object("stored"), "LogBatch")
        },
        "/v1/runs/{run_id}/children": {
            "post": _op(
                "Start a child run at a position of the code (or get the one started there)",
                {"description": "the child", **_json("Children")},
                "ChildRequest",
            )
        },
        "/v1/runs/{run_id}/children/batch": {
            "post": _op(
                "Start child runs at one position of the code (or get those started there)",
                {"description": "the children", **_json("Children")},
                "ChildBatchRequest",
            )
        },
        "/v1/runs/{run_id}/waits": {
            "post": _op(
                "Wait at a position: resolved, sleep in the pod, or suspended (exit now)",
                {"description": "what to do", **_json("WaitReply")},
                "WaitRequest",
            )
        },
        "/v1/runs/{run_id}/tokens": {
            "post": _op(
                "Create a waitpoint token at a position (or get the one created there)",
                {"description": "the token", **_json("Token")},
                "TokenRequest",
            )
        },
    }
    protocol = {
        "name": PROTOCOL_HEADER,
        "in": "header",
        "required": False,
        "description": "The runner's wire protocol version (drover.protocol); absent: 1",
        "schema": {"type": "integer", "minimum": 1},
    }
    for item in paths.values():
        item["parameters"] = [run_id, protocol]
    read_params = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in ("namespace", "name")
    ]
    kube_auth: list[dict[str, list[str]]] = [{"kubernetesToken": []}]
    paths["/v1/namespaces/{namespace}/taskruns/{name}"] = {
        "parameters": read_params,
        "get": {
            **_op(
                "A run's record: phase, full output, error with traceback, metadata, steps",
                _object("the run"),
            ),
            "security": kube_auth,
        },
    }
    paths["/v1/namespaces/{namespace}/taskruns/{name}/logs"] = {
        "parameters": [
            *read_params,
            {"name": "after", "in": "query", "schema": {"type": "integer"}},
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 5000},
            },
            {"name": "attempt", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "since", "in": "query", "schema": {"type": "string"}},
        ],
        "get": {
            **_op(
                "The run's log lines, oldest first, after line `after`; of one attempt, from "
                "`since` (RFC 3339 or a duration back from now)",
                {"description": "log lines", **_json("LogPage")},
            ),
            "security": kube_auth,
        },
    }
    _trigger_api(paths, kube_auth)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Drover run API",
            "version": __version__,
            "description": "Called by the Drover runner inside task pods. Every call "
            "carries the attempt's bearer token.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "attemptToken": {"type": "http", "scheme": "bearer"},
                "kubernetesToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes token; RBAC `get taskruns` in the namespace",
                },
            },
        },
        "security": [{"attemptToken": []}],
    }


def _trigger_api(paths: dict[str, dict[str, Any]], auth: list[dict[str, list[str]]]) -> None:
    """Applications' routes: also served through the Kubernetes API server under
    `/apis/api.drover.dev/v1` (any Kubernetes identity)."""

    def param(name: str, where: str = "path", **schema: Any) -> dict[str, Any]:
        return {
            "name": name,
            "in": where,
            "required": where == "path",
            "schema": {"type": "string", **schema},
        }

    def op(summary: str, ok: str, body: str | None = None, status: str = "200") -> dict[str, Any]:
        result = _op(summary, {"description": ok, **_json(ok)}, body)
        if status != "200":
            result["responses"][status] = result["responses"].pop("200")
        return {**result, "security": auth}

    namespace, task, name = param("namespace"), param("task"), param("name")
    tasks = "/v1/namespaces/{namespace}/tasks/{task}"
    runs = "/v1/namespaces/{namespace}/taskruns"
    paths[f"{tasks}/trigger"] = {
        "parameters": [namespace, task],
        "post": op(
            "Start a run (201), or get the run its idempotency key is bound to (200)",
            "RunView",
            "TriggerRequest",
            "201",
        ),
    }
    paths[f"{tasks}/batch"] = {
        "parameters": [namespace, task],
        "post": op(
            "Start up to 1,000 runs; nothing unless all are valid", "RunList", "BatchRequest"
        ),
    }
    paths[runs] = {
        "parameters": [
            namespace,
            *(param(q, "query") for q in ("task", "phase", "tag", "since", "until", "continue")),
            param("limit", "query", pattern="^[0-9]+$"),
        ],
        "get": op("Runs newest first, from the history (keyset pages)", "RunList"),
    }
    paths["/v1/taskruns"] = {
        "parameters": [
            *(param(q, "query") for q in ("task", "phase", "tag", "since", "until", "continue")),
            param("limit", "query", pattern="^[0-9]+$"),
        ],
        "get": op(
            "Runs of every namespace newest first (RBAC: list taskruns at the cluster scope)",
            "RunList",
        ),
    }
    paths[runs]["parameters"].append(param("parent", "query"))
    paths[f"{runs}/{{name}}/timeline"] = {
        "parameters": [namespace, name],
        "get": op("A run's executions, steps (with timing) and waits", "RunTimeline"),
    }
    window = param("window", "query", pattern="^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$")
    paths["/v1/namespaces/{namespace}/tasks"] = {
        "parameters": [namespace, window],
        "get": op(
            "Every Task: runs now, outcomes and durations in the window (default 24h)",
            "TaskSummaryList",
        ),
    }
    paths["/v1/tasks"] = {
        "parameters": [window],
        "get": op("The Task overview of every namespace (cluster scope)", "TaskSummaryList"),
    }
    paths[f"{runs}/{{name}}/cancel"] = {
        "parameters": [namespace, name],
        "post": op("Cancel a run", "RunView"),
    }
    paths[f"{runs}/{{name}}/replay"] = {
        "parameters": [namespace, name],
        "post": op("Start a new run like this one", "RunView", "ReplayRequest", "201"),
    }
    waitpoints = "/v1/namespaces/{namespace}/waitpoints"
    token = param("token", format="uuid")
    paths[waitpoints] = {
        "parameters": [
            namespace,
            param("state", "query", enum=["waiting", "completed", "timed_out", "canceled"]),
            param("task", "query"),
            param("run", "query"),
            param("limit", "query", pattern="^[0-9]+$"),
        ],
        "get": op("Waitpoint tokens, newest first (RBAC: list waitpoints)", "TokenList"),
    }
    paths["/v1/waitpoints"] = {
        "parameters": paths[waitpoints]["parameters"][1:],
        "get": op("Waitpoint tokens of every namespace (cluster scope)", "TokenList"),
    }
    paths[f"{waitpoints}/{{token}}"] = {
        "parameters": [namespace, token],
        "get": op("A waitpoint token (RBAC: get waitpoints)", "TokenState"),
    }
    paths[f"{waitpoints}/{{token}}/complete"] = {
        "parameters": [namespace, token],
        "post": op(
            "Complete a token; the first completion wins (RBAC: update waitpoints)",
            "TokenState",
            "TokenCompletion",
        ),
    }
    paths["/v1/tokens/{token}/{secret}"] = {
        "parameters": [token, param("secret")],
        "post": {
            **_op(
                "Complete a token through its URL: the body is the data (JSON, up to 256 KiB)",
                {"description": "the token", **_json("TokenState")},
            ),
            "requestBody": {"content": {"application/json": {"schema": {}}}},
            "security": [],
        },
    }
    paths["/v1/hooks/{namespace}/{task}"] = {
        "parameters": [namespace, task],
        "post": {
            **_op(
                "A signed webhook: the body is the payload (X-Drover-Signature-256)",
                {"description": "the run", **_json("RunView")},
            ),
            "requestBody": {"content": {"application/json": {"schema": {}}}},
            "security": [],
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Write docs/openapi.json; with `--check`, fail if it is stale instead."""
    target = Path("docs/openapi.json")
    if "--check" in sys.argv[1:]:
        if not target.exists() or target.read_text() != render():
            sys.exit(f"{target} is stale: run `make openapi`")
        return
    target.write_text(render())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
