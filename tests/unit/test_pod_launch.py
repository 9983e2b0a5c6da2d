"""Pods created in the background (`PodConverger.launch`): a pod is never created twice at
once, and a stop that meets a create in flight waits for it to land instead of finding
nothing and letting the pod run. Pure logic: the store and the Kubernetes client are fakes
(the end-to-end cancel tests run the real thing)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from lightkube import ApiError

from drover_operator.converge.pods import CreatedPod, PodConverger
from drover_operator.domain.records import PodToCreate, PodToStop
from drover_operator.settings import load

RUN = "6f1c2a52-0c1e-4b59-9a49-3f6a3c2d7e10"
ROW = PodToCreate(
    run_id=RUN,
    number=1,
    try_number=1,
    max_duration=dt.timedelta(minutes=5),
    pod_name="hello-1-a1",
    task_spec={"image": "busybox", "command": ["true"]},
    namespace="ns",
    name="hello-1",
    task="hello",
)


async def settle(condition: Any) -> None:
    """Let the event loop run until `condition()` holds (no clock involved)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Attempts:
    """The attempt rows the converger reads and marks."""

    def __init__(self) -> None:
        self.created: set[tuple[str, int]] = set()
        self.kill = False
        self.stopped: list[tuple[str, int]] = []

    async def pods_to_create(self, limit: int) -> list[PodToCreate]:
        return [] if (ROW.run_id, ROW.number) in self.created else [ROW]

    async def pods_created(self, attempts: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
        self.created.update(attempts)
        return {attempt: 0.5 for attempt in attempts}

    async def pods_to_stop(self, limit: int) -> list[PodToStop]:
        if not self.kill:
            return []
        return [PodToStop(RUN, 1, ROW.pod_name, 0, "ns")]

    async def pod_stopped(self, run_id: str, number: int) -> None:
        self.kill = False
        self.stopped.append((run_id, number))


class Store:
    def __init__(self) -> None:
        self.attempts = Attempts()


class Pod:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def to_dict(self) -> dict[str, Any]:
        return self.body


class Client:
    """Pod creates wait for `land`; the pod exists once a create returned."""

    def __init__(self) -> None:
        self.land = asyncio.Event()
        self.creates = 0
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []

    async def create(self, obj: Any) -> None:
        self.creates += 1
        await self.land.wait()
        body = obj.to_dict()
        self.pods[body["metadata"]["name"]] = body

    async def get(self, _kind: Any, name: str, namespace: str) -> Pod:
        if name not in self.pods:
            raise ApiError(response=_NotFound())  # type: ignore[arg-type]
        return Pod(self.pods[name])

    async def delete(self, _kind: Any, name: str, **_: Any) -> None:
        self.deleted.append(name)
        self.pods.pop(name, None)


class _NotFound:
    status_code = 404

    def json(self) -> dict[str, Any]:
        return {"kind": "Status", "code": 404, "message": "not found", "reason": "NotFound"}


def test_a_stop_during_a_create_in_flight_waits_for_the_pod_then_deletes_it() -> None:
    async def scenario() -> None:
        store, client = Store(), Client()
        settings = load({"DROVER_DATABASE_URL": "postgresql://unused/db"})
        pods = PodConverger(settings, store, client, None)  # type: ignore[arg-type]
        landed: list[list[CreatedPod]] = []
        assert await pods.launch(landed.append) == 1
        # A second pass while the POST is in flight starts no second create of the pod.
        assert await pods.launch(landed.append) == 0
        await settle(lambda: client.creates == 1)
        # Canceled meanwhile: the stop is deferred, not "done" against a pod not there yet.
        store.attempts.kill = True
        await pods.stop()
        assert pods.stop_deferred and store.attempts.stopped == [] and client.deleted == []
        client.land.set()
        await settle(lambda: landed)
        assert client.creates == 1
        assert [(p.task, p.number, p.latency) for p in landed[0]] == [("hello", 1, 0.5)]
        assert ROW.pod_name in client.pods and store.attempts.created == {(RUN, 1)}
        # The pass `done` wakes deletes the pod that landed.
        await pods.stop()
        assert not pods.stop_deferred
        assert client.deleted == [ROW.pod_name] and store.attempts.stopped == [(RUN, 1)]
        assert ROW.pod_name not in client.pods

    asyncio.run(scenario())


def test_creates_in_flight_are_cancelled_by_drain() -> None:
    async def scenario() -> None:
        store, client = Store(), Client()
        settings = load({"DROVER_DATABASE_URL": "postgresql://unused/db"})
        pods = PodConverger(settings, store, client, None)  # type: ignore[arg-type]
        landed: list[list[CreatedPod]] = []
        assert await pods.launch(landed.append) == 1
        await settle(lambda: client.creates == 1)
        await pods.drain()
        assert landed == [] and store.attempts.created == set()
        # Nothing is left claimed: the next start creates (or adopts) the pod.
        assert await pods.launch(landed.append) == 1
        client.land.set()
        await settle(lambda: landed)
        assert store.attempts.created == {(RUN, 1)}

    asyncio.run(scenario())
