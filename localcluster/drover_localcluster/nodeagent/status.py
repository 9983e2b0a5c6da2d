"""Pod and container status as the kubelet reports it, built from the agent's records.

Pure data: no I/O, so the shapes are unit-testable.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from drover_localcluster.nodeagent.containers import timestamp

HOST_IP = "127.0.0.1"
# Condition types this agent owns; others (PodScheduled, DisruptionTarget, …) are kept as is.
OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def _ts(moment: dt.datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


@dataclass
class Terminated:
    exit_code: int
    reason: str
    started_at: dt.datetime | None
    finished_at: dt.datetime
    message: str | None = None
    container_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": _ts(self.started_at),
            "finishedAt": _ts(self.finished_at),
        }
        if self.message:
            out["message"] = self.message
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class ContainerRecord:
    """What the agent knows of one container of a pod."""

    name: str
    image: str
    init: bool = False
    image_id: str = ""  # `<repository>@<digest>` when it runs inside its image
    restart_count: int = 0
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str | None = None
    running_since: dt.datetime | None = None
    container_id: str | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    log_files: list[str] = field(default_factory=list)

    def set_waiting(self, reason: str, message: str | None = None) -> None:
        self.waiting_reason, self.waiting_message = reason, message
        self.running_since = None

    def set_running(self, since: dt.datetime, container_id: str) -> None:
        if self.terminated is not None:
            self.last_terminated = self.terminated
            self.restart_count += 1
        self.terminated = None
        self.waiting_reason = self.waiting_message = None
        self.running_since = since
        self.container_id = container_id

    def set_terminated(self, result: Terminated) -> None:
        self.terminated = result
        self.running_since = None
        self.waiting_reason = self.waiting_message = None

    @property
    def running(self) -> bool:
        return self.running_since is not None

    def to_api(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.running_since is not None:
            state = {"running": {"startedAt": _ts(self.running_since)}}
        elif self.terminated is not None and self.waiting_reason is None:
            state = {"terminated": self.terminated.to_api()}
        else:
            waiting: dict[str, Any] = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.running,
            "started": self.running,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": (
                {"terminated": self.last_terminated.to_api()} if self.last_terminated else {}
            ),
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def _condition(
    kind: str, ok: bool, moment: dt.datetime, reason: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": _ts(moment),
    }
    if reason and not ok:
        out["reason"] = reason
    return out


def merge_conditions(
    existing: list[dict[str, Any]], owned: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Keep foreign conditions; keep a condition's transition time while its status holds."""
    by_type = {c["type"]: c for c in existing}
    merged = [c for c in existing if c["type"] not in OWNED_CONDITIONS]
    for condition in owned:
        previous = by_type.get(condition["type"])
        if previous is not None and previous.get("status") == condition["status"]:
            condition["lastTransitionTime"] = previous.get("lastTransitionTime")
        merged.append(condition)
    return merged


def pod_status(
    *,
    phase: str,
    start_time: dt.datetime,
    init: list[ContainerRecord],
    main: list[ContainerRecord],
    existing_conditions: list[dict[str, Any]],
    reason: str | None = None,
    message: str | None = None,
    moment: dt.datetime | None = None,
) -> dict[str, Any]:
    moment = moment or dt.datetime.now(dt.UTC)
    initialized = all(c.terminated is not None and c.terminated.exit_code == 0 for c in init)
    ready = phase == "Running" and all(c.running for c in main)
    not_ready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
    owned = [
        _condition("PodReadyToStartContainers", True, moment),
        _condition("Initialized", initialized, moment, "ContainersNotInitialized"),
        _condition("ContainersReady", ready, moment, not_ready),
        _condition("Ready", ready, moment, not_ready),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": HOST_IP,
        "podIPs": [{"ip": HOST_IP}],
        "startTime": _ts(start_time),
        "conditions": merge_conditions(existing_conditions, owned),
        "containerStatuses": [c.to_api() for c in main],
        "reason": reason,
        "message": message,
    }
    if init:
        status["initContainerStatuses"] = [c.to_api() for c in init]
    return status


__all__ = ["ContainerRecord", "Terminated", "merge_conditions", "pod_status", "timestamp"]
