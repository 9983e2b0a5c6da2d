"""The node agent's main loop: Node and Lease upkeep, the pod watch, the log server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import signal
from typing import Any

import httpx2 as httpx
from aiohttp import web
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.exceptions import ObjectDeleted
from lightkube.core.generic_client import ALL_NS
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import EventSource, NodeSpec, ObjectReference, Taint
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Event, Node, NodeStatus, Pod, PodStatus, Secret
from lightkube.types import PatchType

from drover_localcluster.nodeagent.config import PASSTHROUGH_ENV, AgentConfig
from drover_localcluster.nodeagent.containers import now
from drover_localcluster.nodeagent.images import ImageStore
from drover_localcluster.nodeagent.logserver import make_app, ssl_context
from drover_localcluster.nodeagent.podenv import decode_secret
from drover_localcluster.nodeagent.podworker import PodWorker
from drover_localcluster.nodeagent.retry import TRANSIENT_CODES, while_unreachable
from drover_localcluster.nodeagent.serviceproxy import ApiServerProxy
from drover_localcluster.nodeagent.status import HOST_IP
from drover_localcluster.nodeagent.tokens import TokenManager
from drover_localcluster.processes import MARKER_ENV

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"


def _memory_bytes() -> int:
    for line in open("/proc/meminfo"):  # noqa: SIM115 - tiny read
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _micro(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.client = AsyncClient(
            KubeConfig.from_file(str(config.kubeconfig)), field_manager="drover-node-agent"
        )
        self.workers: dict[str, PodWorker] = {}
        self.allocatable = {
            "cpu": str(os.cpu_count() or 1),
            "memory": str(_memory_bytes()),
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        self.tokens = TokenManager(self.client, config.apiserver_url, config.cluster_ca)
        port = int(config.apiserver_url.rsplit(":", 1)[1])
        self.service_proxy = ApiServerProxy(port, f"{config.marker}/{config.node_name}")
        self.images = ImageStore(
            config.image_store, config.rootfs_cache or config.state_dir / "rootfs"
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()

    # -- services for pod workers ------------------------------------------------------------

    def base_env(self, pod: Pod) -> dict[str, str]:
        """What every host-process container starts with, before the pod's own env."""
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        if self.config.path_prepend:
            env["PATH"] = os.pathsep.join([*self.config.path_prepend, env.get("PATH", "")])
        if self.config.python_path:
            env["PYTHONPATH"] = os.pathsep.join(self.config.python_path)
        return {**env, **self.cluster_env(pod)}

    def cluster_env(self, pod: Pod) -> dict[str, str]:
        """What the kubelet adds to every container: its hostname and where the API server
        is (pods share the host's network here); and the cluster's process marker."""
        assert pod.metadata is not None
        port = self.config.apiserver_url.rsplit(":", 1)[1]
        return {
            "HOSTNAME": pod.metadata.name or "",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            MARKER_ENV: self.config.marker,
        }

    async def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        async def read() -> dict[str, str]:
            if kind == "Secret":
                secret = await self.client.get(Secret, name, namespace=namespace)
                data = decode_secret(secret.data)
                return {**data, **(secret.stringData or {})}
            config_map = await self.client.get(ConfigMap, name, namespace=namespace)
            return dict(config_map.data or {})

        try:
            return await while_unreachable(f"reading {kind} {namespace}/{name}", read)
        except ApiError as exc:
            if exc.status.code in (403, 404):
                return None
            raise

    def event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        self._spawn(self._event(pod, kind, reason, message))

    async def _event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        assert pod.metadata is not None
        moment = now()
        event = Event(
            metadata=ObjectMeta(
                name=f"{pod.metadata.name}.{now().timestamp():.9f}".replace(".", "", 1)[:253],
                namespace=pod.metadata.namespace,
            ),
            involvedObject=ObjectReference(
                kind="Pod",
                apiVersion="v1",
                name=pod.metadata.name,
                namespace=pod.metadata.namespace,
                uid=pod.metadata.uid,
            ),
            reason=reason,
            message=message,
            type=kind,
            source=EventSource(component="kubelet", host=self.config.node_name),
            firstTimestamp=moment,
            lastTimestamp=moment,
            count=1,
            reportingComponent="kubelet",
            reportingInstance=self.config.node_name,
        )
        with contextlib.suppress(ApiError, httpx.HTTPError):
            await self.client.create(event)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Write the pod's status; False if the pod is gone."""

        async def patch() -> None:
            await self.client.patch(
                PodStatus, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
            )

        try:
            await while_unreachable(f"status of pod {namespace}/{name}", patch)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Complete a graceful deletion as the kubelet does: grace 0, only this pod's UID."""
        # lightkube's delete takes no body; the UID precondition keeps a same-named successor
        # pod safe, so this one call goes through its HTTP client directly.
        http: httpx.AsyncClient = self.client._client._client

        async def delete() -> httpx.Response:
            response = await http.request(
                "DELETE",
                f"/api/v1/namespaces/{namespace}/pods/{name}",
                json={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
            )
            if response.status_code in TRANSIENT_CODES:
                raise httpx.TransportError(f"{response.status_code} {response.text}")
            return response

        response = await while_unreachable(f"deleting pod {namespace}/{name}", delete)
        if response.status_code not in (200, 202, 404, 409):
            log.warning(
                "deleting pod %s/%s: %s %s", namespace, name, response.status_code, response.text
            )

    def forget(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]

    def find(self, namespace: str, name: str) -> PodWorker | None:
        matches = [w for w in self.workers.values() if (w.namespace, w.name) == (namespace, name)]
        return matches[-1] if matches else None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the Node and its Lease --------------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        moment = _ts(now())
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.config.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.kubelet_port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "Drover node agent (images from its local store, else host processes)",
                "containerRuntimeVersion": "drover://0.2",
                "kubeletVersion": f"v{self.config.kubernetes_version}",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": r,
                    "lastHeartbeatTime": moment,
                    "lastTransitionTime": moment,
                }
                for t, s, r in conditions
            ],
        }

    async def register(self) -> None:
        name = self.config.node_name
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self._node_status()["nodeInfo"]["architecture"],
            **self.config.labels,
        }
        try:
            taints = [
                Taint(key=t["key"], effect=t["effect"], value=t.get("value"))
                for t in self.config.taints
            ] or None
            await self.client.create(
                Node(metadata=ObjectMeta(name=name, labels=labels), spec=NodeSpec(taints=taints))
            )
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        await self.client.patch(
            NodeStatus, name, {"status": self._node_status()}, patch_type=PatchType.MERGE
        )

    async def _register_once_reachable(self) -> bool:
        """Register, retrying while the API server is down or restarting, as the kubelet
        does: a node restarted alongside its control plane must come back, not exit.
        False: asked to stop first."""
        registering = asyncio.ensure_future(
            while_unreachable(f"registering node {self.config.node_name}", self.register)
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({registering, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not registering.done():
            registering.cancel()
            return False
        await registering
        return True

    async def _lease_loop(self) -> None:
        name = self.config.node_name
        while True:
            moment = now()
            try:
                try:
                    await self.client.patch(
                        Lease,
                        name,
                        {
                            "spec": {
                                "renewTime": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                "holderIdentity": name,
                            }
                        },
                        namespace=LEASE_NAMESPACE,
                        patch_type=PatchType.MERGE,
                    )
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise
                    await self.client.create(
                        Lease(
                            metadata=ObjectMeta(name=name, namespace=LEASE_NAMESPACE),
                            spec=LeaseSpec(
                                holderIdentity=name,
                                renewTime=moment,
                                leaseDurationSeconds=self.config.lease_duration_s,
                            ),
                        )
                    )
            except (ApiError, httpx.HTTPError) as exc:
                log.warning("renewing the node lease failed: %s", exc)
            await asyncio.sleep(self.config.lease_renew_s)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_update_s)
            try:
                await self.client.patch(
                    NodeStatus,
                    self.config.node_name,
                    {"status": self._node_status()},
                    patch_type=PatchType.MERGE,
                )
            except ApiError as exc:
                if exc.status.code == 404:
                    await self.register()  # deleted under us: register again, as the kubelet
                else:
                    log.warning("updating node status failed: %s", exc)
            except httpx.HTTPError as exc:
                log.warning("updating node status failed: %s", exc)

    # -- pods --------------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        fields: dict[str, Any] = {"spec.nodeName": self.config.node_name}
        while True:
            try:
                async for change, pod in self.client.watch(Pod, namespace=ALL_NS, fields=fields):
                    self._dispatch(change, pod)
            except (ApiError, httpx.HTTPError, ObjectDeleted) as exc:
                log.warning("pod watch interrupted (%s); resuming", exc)
                await asyncio.sleep(1)
            except Exception:
                # Anything else is a bug, but a node that stops watching its pods hangs every
                # pod on it: log it loudly and watch again.
                log.exception("pod watch failed; resuming")
                await asyncio.sleep(1)

    def _dispatch(self, change: str, pod: Pod) -> None:
        assert pod.metadata is not None
        uid = pod.metadata.uid or ""
        worker = self.workers.get(uid)
        if change == "DELETED":
            if worker is not None:
                worker.observe_gone()
            return
        if worker is None:
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.observe(pod)
            self._spawn(worker.run())
        else:
            worker.observe(pod)

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        if not await self._register_once_reachable():
            return
        await self.service_proxy.start()
        runner = web.AppRunner(make_app(self.find), access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner,
            HOST_IP,
            self.config.kubelet_port,
            ssl_context=ssl_context(
                self.config.serving_cert, self.config.serving_key, self.config.cluster_ca
            ),
        )
        await site.start()
        loops = [
            self._spawn(c) for c in (self._lease_loop(), self._status_loop(), self._watch_pods())
        ]
        log.info("node %s ready; kubelet port %d", self.config.node_name, self.config.kubelet_port)
        await self._stop.wait()
        for task in loops:
            task.cancel()
        # Stop pods' processes, as a node shutting down would; the pods stay as they are.
        await asyncio.gather(
            *(w._stop_all(5.0) for w in list(self.workers.values())), return_exceptions=True
        )
        await runner.cleanup()
        await self.service_proxy.close()
        await self.client.close()
