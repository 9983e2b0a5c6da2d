"""A pod's volumes as directories on the node, for the containers that run inside an image.

Like the kubelet, the agent writes each volume under the pod's directory once, before the
pod's first container starts: `emptyDir` (shared by the pod's containers, kept across their
restarts, gone with the pod), `configMap`, `secret`, `downwardAPI` and `projected` (the
ServiceAccount token volume Kubernetes adds to pods: a token bound to the pod, renewed at
80 % of its lifetime, the cluster's CA and the namespace), and `hostPath`. Other volume types
(claims, CSI, NFS, …) have no storage here: the pod waits with `FailedMount` events.
Differences from the kubelet: no size limits, `medium: Memory` is a directory too, and a
ConfigMap or Secret changed later is not rewritten into a running pod.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lightkube import ApiError
from lightkube.models.core_v1 import DownwardAPIVolumeFile, KeyToPath, Volume, VolumeProjection
from lightkube.resources.core_v1 import Pod

from drover_localcluster.nodeagent.podenv import EnvError, Lookup, field_value, resource_value

if TYPE_CHECKING:
    from drover_localcluster.nodeagent.tokens import TokenManager

_DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume cannot be set up (yet): a missing object, or a type this node lacks."""

    reason = "FailedMount"


def _write(path: Path, data: str, mode: int | None, group: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    tmp.chmod(_DEFAULT_MODE if mode is None else mode)
    if group is not None:
        os.chown(tmp, -1, group)
    tmp.replace(path)


class PodVolumes:
    """Writes one pod's volumes below `directory`; `paths` maps volume names to them."""

    def __init__(
        self,
        pod: Pod,
        directory: Path,
        lookup: Lookup,
        tokens: TokenManager,
        node_allocatable: Mapping[str, str],
    ) -> None:
        assert pod.metadata is not None and pod.spec is not None
        self.pod = pod
        self.directory = directory
        self.lookup = lookup
        self.tokens = tokens
        self.allocatable = node_allocatable
        self.namespace = pod.metadata.namespace or "default"
        context = pod.spec.securityContext
        self.fs_group = context.fsGroup if context is not None else None
        self.paths: dict[str, Path] = {}

    async def materialize(self) -> dict[str, Path]:
        """Every volume of the pod; raises VolumeError for one that cannot be set up."""
        assert self.pod.spec is not None
        for volume in self.pod.spec.volumes or []:
            if volume.name not in self.paths:
                self.paths[volume.name] = await self._volume(volume)
        return self.paths

    async def _volume(self, volume: Volume) -> Path:
        if volume.hostPath is not None:
            return self._host_path(volume)
        target = self.directory / volume.name
        if volume.emptyDir is not None:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)  # as the kubelet: any container user may write
            if self.fs_group is not None:
                os.chown(target, -1, self.fs_group)
                target.chmod(0o2777)
            return target
        target.mkdir(parents=True, exist_ok=True)
        if volume.configMap is not None:
            cm = volume.configMap
            await self._keys(
                target, "ConfigMap", cm.name or "", cm.items, cm.optional, cm.defaultMode
            )
        elif volume.secret is not None:
            secret = volume.secret
            await self._keys(
                target, "Secret", secret.secretName or "", secret.items, secret.optional,
                secret.defaultMode,
            )  # fmt: skip
        elif volume.downwardAPI is not None:
            self._downward(target, volume.downwardAPI.items or [], volume.downwardAPI.defaultMode)
        elif volume.projected is not None:
            for source in volume.projected.sources or []:
                await self._projection(volume.name, target, source, volume.projected.defaultMode)
        else:
            kinds = [k for k, v in volume.to_dict().items() if k != "name" and v is not None]
            raise VolumeError(
                f"{volume.name}: {'/'.join(kinds) or 'this'} volumes have no storage on the "
                "Drover node agent"
            )
        return target

    async def _projection(
        self, name: str, target: Path, source: VolumeProjection, mode: int | None
    ) -> None:
        if source.configMap is not None:
            cm = source.configMap
            await self._keys(target, "ConfigMap", cm.name or "", cm.items, cm.optional, mode)
        elif source.secret is not None:
            secret = source.secret
            await self._keys(
                target, "Secret", secret.name or "", secret.items, secret.optional, mode
            )
        elif source.downwardAPI is not None:
            self._downward(target, source.downwardAPI.items or [], mode)
        elif source.serviceAccountToken is not None:
            token = source.serviceAccountToken
            try:
                await self.tokens.project(
                    self.pod, target / token.path, token.expirationSeconds, token.audience
                )
            except ApiError as exc:
                raise VolumeError(
                    f"{name}: requesting a ServiceAccount token failed: {exc.status.message}"
                ) from exc
        else:
            raise VolumeError(f"{name}: a projected source the Drover node agent lacks")

    def _host_path(self, volume: Volume) -> Path:
        assert volume.hostPath is not None
        path = Path(volume.hostPath.path)
        kind = volume.hostPath.type or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind in ("Directory", "File", "Socket") and not path.exists():
            raise VolumeError(f"{volume.name}: hostPath {path} does not exist")
        return path

    async def _keys(
        self,
        target: Path,
        kind: str,
        name: str,
        items: list[KeyToPath] | None,
        optional: bool | None,
        default_mode: int | None,
    ) -> None:
        data = await self.lookup(kind, self.namespace, name)
        if data is None:
            if optional:
                return
            raise VolumeError(f'{kind.lower()} "{name}" not found')
        wanted = items or [KeyToPath(key=k, path=k) for k in sorted(data)]
        for item in wanted:
            if item.key not in data:
                if optional:
                    continue
                raise VolumeError(f"couldn't find key {item.key} in {kind} {self.namespace}/{name}")
            mode = item.mode if item.mode is not None else default_mode
            _write(target / item.path, data[item.key], mode, self.fs_group)

    def _downward(
        self, target: Path, items: list[DownwardAPIVolumeFile], default_mode: int | None
    ) -> None:
        assert self.pod.spec is not None
        for item in items:
            try:
                if item.fieldRef is not None:
                    value = field_value(self.pod, item.fieldRef.fieldPath)
                elif item.resourceFieldRef is not None:
                    ref = item.resourceFieldRef
                    container = next(
                        c for c in self.pod.spec.containers if c.name == ref.containerName
                    )
                    divisor = str(ref.divisor) if ref.divisor is not None else None
                    value = resource_value(
                        self.pod, container, ref.resource, divisor, self.allocatable
                    )
                else:
                    continue
            except (EnvError, StopIteration) as exc:
                raise VolumeError(f"downward API item {item.path}: {exc}") from exc
            mode = item.mode if item.mode is not None else default_mode
            _write(target / item.path, value, mode, self.fs_group)
