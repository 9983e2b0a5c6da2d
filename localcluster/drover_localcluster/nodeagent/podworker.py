"""The life of one pod on the node: images, volumes, env, init containers, containers,
restarts, deadline, graceful deletion — reported through the pod's status as the kubelet
reports it. A container whose image is in the node's store runs inside it (imagerun.py);
any other runs as a host process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lightkube import ApiError
from lightkube.models.core_v1 import Container
from lightkube.resources.core_v1 import Pod

from drover_localcluster.nodeagent import imagerun
from drover_localcluster.nodeagent.containers import ContainerProcess, ContainerStartError, now
from drover_localcluster.nodeagent.images import ImageUnpackError, PreparedImage
from drover_localcluster.nodeagent.launch import HostLaunch, ImageLaunch
from drover_localcluster.nodeagent.podenv import EnvError, container_argv, container_env
from drover_localcluster.nodeagent.retry import while_unreachable
from drover_localcluster.nodeagent.status import ContainerRecord, Terminated, pod_status
from drover_localcluster.nodeagent.volumes import PodVolumes, VolumeError

if TYPE_CHECKING:
    from drover_localcluster.nodeagent.agent import NodeAgent

log = logging.getLogger(__name__)

_CONFIG_RETRY_S = 2.0
_BACKOFF_START_S, _BACKOFF_MAX_S = 10.0, 300.0
T = TypeVar("T")


class PodWorker:
    """Runs one pod; `observe` feeds it each new version of the pod object."""

    def __init__(self, agent: NodeAgent, pod: Pod) -> None:
        assert pod.metadata is not None and pod.spec is not None
        self.agent = agent
        self.pod = pod
        self.namespace = pod.metadata.namespace or "default"
        self.name = pod.metadata.name or ""
        self.uid = pod.metadata.uid or ""
        self.dir = agent.config.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.init = [
            ContainerRecord(c.name, c.image or "", init=True) for c in pod.spec.initContainers or []
        ]
        self.main = [ContainerRecord(c.name, c.image or "") for c in pod.spec.containers]
        self.processes: dict[str, ContainerProcess] = {}
        # Container name → its image from the node's store; absent: a host process.
        self.images: dict[str, PreparedImage] = {}
        self.volumes: dict[str, Path] = {}
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now()
        self.deleting = asyncio.Event()
        self.gone = False
        self.stopping = False
        self.changed = asyncio.Condition()
        self._report_lock = asyncio.Lock()
        self._last_report: dict[str, Any] | None = None

    # -- inputs from the watch -------------------------------------------------------------

    def observe(self, pod: Pod) -> None:
        self.pod = pod
        if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
            self.deleting.set()

    def observe_gone(self) -> None:
        """The pod object is gone (force-deleted): stop at once."""
        self.gone = True
        self.deleting.set()

    def record(self, name: str) -> ContainerRecord | None:
        return next((c for c in [*self.init, *self.main] if c.name == name), None)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    # -- the lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            status = self.pod.status
            if status is not None and status.phase in ("Succeeded", "Failed"):
                self.phase = status.phase  # finished before an agent restart: never rerun
            elif self.dir.exists():
                await self._lost_on_restart()
            else:
                await self._run()
            await self.deleting.wait()
            await self._finalize_deletion()
        except Exception as exc:
            # A bug or an API failure we did not expect: fail the pod visibly, never hang it.
            log.exception("pod %s/%s: worker failed", self.namespace, self.name)
            await self._stop_all(0)
            self.phase, self.reason, self.message = "Failed", "NodeAgentError", repr(exc)
            with contextlib.suppress(Exception):
                await self.report()
        finally:
            await self.agent.tokens.forget(self.uid)
            self.agent.forget(self)

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        await self.report()
        images = await self._retrying(self._prepare_images, ImageUnpackError, "ErrImagePull")
        if images is None:
            return
        self.images = images
        token_env: dict[str, str] | None = {}
        if any(r.name not in self.images for r in [*self.init, *self.main]):
            token_env = await self._service_account_env()
        if token_env is None:
            return
        if self.images:
            volumes = await self._retrying(self._prepare_volumes, VolumeError, "ContainerCreating")
            if volumes is None:
                return
            self.volumes = volumes
        deadline = self._deadline_seconds()
        containers = asyncio.create_task(self._run_containers(token_env))
        waits: set[asyncio.Future[Any]] = {containers, asyncio.ensure_future(self.deleting.wait())}
        if deadline is not None:
            waits.add(asyncio.ensure_future(asyncio.sleep(deadline)))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for other in pending:
            if other is not containers:
                other.cancel()
        if containers in done:
            await containers  # a failure to start them is the worker's: the pod fails visibly
        else:
            grace = self._grace_seconds()
            if not self.deleting.is_set():
                self.reason = "DeadlineExceeded"
                self.message = "Pod was active on the node longer than the specified deadline"
                self.agent.event(self.pod, "Warning", "DeadlineExceeded", self.message)
            await self._stop_all(grace)
            await containers
        self._finish_phase()
        await self.report()

    async def _service_account_env(self) -> dict[str, str] | None:
        """The pod's ServiceAccount kubeconfig, retried while the API refuses; None if the
        pod is deleted meanwhile."""
        while not self.deleting.is_set():
            try:
                return await while_unreachable(
                    f"token for pod {self.namespace}/{self.name}",
                    lambda: self.agent.tokens.setup(self.pod, self.dir),
                )
            except ApiError as exc:
                message = f"requesting a ServiceAccount token failed: {exc.status.message}"
                for record in self.main:
                    record.set_waiting("CreateContainerConfigError", message)
                await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deleting.wait(), timeout=_CONFIG_RETRY_S)
        return None

    async def _prepare_images(self) -> dict[str, PreparedImage]:
        """The images of the pod's containers that are in the node's store (unpacked)."""
        assert self.pod.spec is not None
        prepared: dict[str, PreparedImage] = {}
        for spec in [*(self.pod.spec.initContainers or []), *self.pod.spec.containers]:
            image = await self.agent.images.prepare(spec.image or "")
            if image is not None:
                prepared[spec.name] = image
        return prepared

    async def _prepare_volumes(self) -> dict[str, Path]:
        volumes = PodVolumes(
            self.pod, self.dir / "volumes", self.agent.lookup, self.agent.tokens,
            self.agent.allocatable,
        )  # fmt: skip
        return await volumes.materialize()

    async def _retrying(
        self, step: Callable[[], Awaitable[T]], errors: type[Exception], reason: str
    ) -> T | None:
        """`step()`, retried while it raises `errors` (the containers wait with `reason` and
        a Warning Event says why); None if the pod is deleted meanwhile."""
        last = ""
        while not self.deleting.is_set():
            try:
                return await step()
            except errors as exc:
                if str(exc) != last:
                    event = VolumeError.reason if isinstance(exc, VolumeError) else "Failed"
                    self.agent.event(self.pod, "Warning", event, str(exc))
                    last = str(exc)
                for record in [*self.init, *self.main]:
                    record.set_waiting(reason, str(exc))
                await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deleting.wait(), timeout=_CONFIG_RETRY_S)
        return None

    def _deadline_seconds(self) -> float | None:
        assert self.pod.spec is not None
        if self.pod.spec.activeDeadlineSeconds is None:
            return None
        elapsed = (now() - self.start_time).total_seconds()
        return max(0.0, self.pod.spec.activeDeadlineSeconds - elapsed)

    def _grace_seconds(self) -> float:
        meta, spec = self.pod.metadata, self.pod.spec
        if self.gone:
            return 0.0
        if meta is not None and meta.deletionGracePeriodSeconds is not None:
            return float(meta.deletionGracePeriodSeconds)
        if spec is not None and spec.terminationGracePeriodSeconds is not None:
            return float(spec.terminationGracePeriodSeconds)
        return 30.0

    async def _stop_all(self, grace: float) -> None:
        self.stopping = True
        for name, process in list(self.processes.items()):
            self.agent.event(self.pod, "Normal", "Killing", f"Stopping container {name}")
            await process.stop(grace)
        await self._notify()

    async def _run_containers(self, token_env: dict[str, str]) -> None:
        assert self.pod.spec is not None
        for spec, record in zip(self.pod.spec.initContainers or [], self.init, strict=True):
            if not await self._run_until_done(spec, record, token_env, restart_on_success=False):
                return
        policy = self.pod.spec.restartPolicy or "Always"
        await asyncio.gather(
            *(
                self._run_until_done(spec, record, token_env, restart_on_success=policy == "Always")
                for spec, record in zip(self.pod.spec.containers, self.main, strict=True)
            )
        )

    async def _run_until_done(
        self,
        spec: Container,
        record: ContainerRecord,
        token_env: dict[str, str],
        *,
        restart_on_success: bool,
    ) -> bool:
        """Run a container, restarting it per the pod's policy; True if it ended with 0."""
        assert self.pod.spec is not None
        policy = self.pod.spec.restartPolicy or "Always"
        backoff = _BACKOFF_START_S
        while not self.stopping:
            code = await self._run_once(spec, record, token_env)
            if code is None:
                return False
            restart = (restart_on_success or code != 0) and policy != "Never"
            if self.stopping or not restart:
                return code == 0
            record.set_waiting(
                "CrashLoopBackOff",
                f"back-off {backoff:.0f}s restarting failed container={spec.name}",
            )
            await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deleting.wait(), timeout=backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
        return False

    async def _run_once(
        self, spec: Container, record: ContainerRecord, token_env: dict[str, str]
    ) -> int | None:
        """Start the container and wait for it; its exit code, None if never started."""
        run = record.restart_count + (record.terminated is not None)
        launch = await self._launch(spec, record, token_env, run)
        if launch is None:
            return None
        log_file = self.dir / f"{spec.name}.{run}.log"
        try:
            process, pid = await self._start(spec, launch, log_file)
        except ContainerStartError as exc:
            started = now()
            record.set_running(started, "drover://none")
            record.set_terminated(Terminated(128, "StartError", started, now(), str(exc)))
            record.log_files.append(str(log_file))
            self.agent.event(self.pod, "Warning", "Failed", f"Error: {exc}")
            await self.report()
            return 128
        self.processes[spec.name] = process
        record.set_running(process.started_at, f"drover://{pid}")
        if not record.init:
            self.phase = "Running"  # a pod runs once any of its (main) containers does
        record.log_files.append(str(log_file))
        self.agent.event(self.pod, "Normal", "Started", f"Started container {spec.name}")
        await self.report()
        code = await process.wait()
        self.processes.pop(spec.name, None)
        await process.stop(0)  # reap any children the main process left behind
        reason = "Completed" if code == 0 else "Error"
        record.set_terminated(
            Terminated(
                code,
                reason,
                process.started_at,
                process.finished_at or now(),
                container_id=f"drover://{pid}",
            )
        )
        await self.report()
        return code

    async def _start(
        self, spec: Container, launch: HostLaunch | ImageLaunch, log_file: Path
    ) -> tuple[ContainerProcess, int]:
        if isinstance(launch, ImageLaunch):
            message = f'Container image "{spec.image}" already present on machine'
            self.agent.event(self.pod, "Normal", "Pulled", message)
        return await launch.start(log_file, self.agent.config.marker)

    async def _launch(
        self, spec: Container, record: ContainerRecord, token_env: dict[str, str], run: int
    ) -> HostLaunch | ImageLaunch | None:
        """How to start the container, once its configuration resolves (retried while a
        Secret, ConfigMap or key is missing); None if the pod stops meanwhile."""
        prepared = self.images.get(spec.name)
        if prepared is None:
            base = {**self.agent.base_env(self.pod), **token_env}
        else:
            base = imagerun.image_env(prepared.image, self.agent.cluster_env(self.pod))
            record.image_id = prepared.image.image_id
        while not self.stopping and not self.deleting.is_set():
            try:
                env = await container_env(
                    self.pod, spec, self.agent.lookup, base, self.agent.allocatable
                )
                if prepared is None:
                    cwd = Path(spec.workingDir) if spec.workingDir else self.dir
                    return HostLaunch(container_argv(spec, env), env, cwd)
                run_dir = self.dir / "containers" / f"{spec.name}.{run}"
                plan = imagerun.plan(
                    pod=self.pod,
                    container=spec,
                    image=prepared.image,
                    rootfs=prepared.rootfs,
                    env=env,
                    volumes=self.volumes,
                    pod_dir=self.dir,
                    run_dir=run_dir,
                    service_address=self.agent.service_proxy.address,
                )
                return ImageLaunch(plan, run_dir)
            except EnvError as exc:
                if record.waiting_message != str(exc):
                    self.agent.event(self.pod, "Warning", "Failed", f"Error: {exc}")
                record.set_waiting(EnvError.reason, str(exc))
                await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deleting.wait(), timeout=_CONFIG_RETRY_S)
        return None

    def _finish_phase(self) -> None:
        if self.reason == "DeadlineExceeded":
            self.phase = "Failed"
            return
        records = [*self.init, *self.main]
        if any(r.terminated is None for r in records):
            # Never started (e.g. deleted while its config was missing): stays Pending.
            return
        ok = all(r.terminated is not None and r.terminated.exit_code == 0 for r in records)
        self.phase = "Succeeded" if ok else "Failed"

    async def _lost_on_restart(self) -> None:
        """The agent restarted while this pod ran: its processes cannot be re-adopted."""
        for record in [*self.init, *self.main]:
            if record.terminated is None:
                record.set_terminated(
                    Terminated(
                        137,
                        "ContainerStatusUnknown",
                        None,
                        now(),
                        "The container could not be located when the pod was terminated",
                    )
                )
        self.phase = "Failed"
        await self.report()

    async def _finalize_deletion(self) -> None:
        if self.processes:
            await self._stop_all(self._grace_seconds())
        if not self.gone:
            await self.report()
            await self.agent.delete_pod(self.namespace, self.name, self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- reporting ---------------------------------------------------------------------------

    async def report(self) -> None:
        """Patch the pod's status if it changed; followers of logs are woken too."""
        await self._notify()
        if self.gone:
            return
        async with self._report_lock:
            existing = (
                [c.to_dict() for c in (self.pod.status.conditions or [])] if self.pod.status else []
            )
            status = pod_status(
                phase=self.phase,
                start_time=self.start_time,
                init=self.init,
                main=self.main,
                existing_conditions=existing,
                reason=self.reason,
                message=self.message,
            )
            if status == self._last_report:
                return
            if await self.agent.patch_status(self.namespace, self.name, status):
                self._last_report = status

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()
