"""A container's environment, resolved as the kubelet resolves it.

Order and precedence follow Kubernetes: `envFrom` sources first, then `env` entries, later
ones overriding earlier ones; `$(VAR)` references expand to variables defined before them,
and `$$` escapes a literal `$`.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable, Mapping

from lightkube.models.core_v1 import (
    ConfigMapKeySelector,
    Container,
    EnvVar,
    SecretKeySelector,
)
from lightkube.resources.core_v1 import Pod
from lightkube.utils.quantity import parse_quantity


class EnvError(Exception):
    """A referenced Secret, ConfigMap or key is missing: the container cannot be created."""

    reason = "CreateContainerConfigError"


# (kind, namespace, name) -> data, or None when the object does not exist.
Lookup = Callable[[str, str, str], Awaitable[dict[str, str] | None]]

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` from `env`; unknown references stay as written, `$$` becomes `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (data or {}).items()}


def field_value(pod: Pod, path: str) -> str:
    """The downward API's `fieldRef.fieldPath` for this pod."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    assert meta is not None and spec is not None
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": spec.nodeName,
        "spec.serviceAccountName": spec.serviceAccountName,
        "status.hostIP": status.hostIP if status else None,
        "status.podIP": status.podIP if status else None,
    }
    if path in simple:
        return simple[path] or ""
    if path in ("status.hostIPs", "status.podIPs"):
        ips = (status.hostIPs if path == "status.hostIPs" else status.podIPs) if status else None
        return ",".join(ip.ip for ip in ips or [] if ip.ip)
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        source = meta.labels if match.group(1) == "labels" else meta.annotations
        return str((source or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        source = meta.labels if path == "metadata.labels" else meta.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted((source or {}).items()))
    raise EnvError(f"unsupported fieldPath {path!r}")


def resource_value(
    pod: Pod,
    container: Container,
    resource: str,
    divisor: str | None,
    node_allocatable: Mapping[str, str],
) -> str:
    """The downward API's `resourceFieldRef`: limits default to the node's allocatable."""
    assert pod.spec is not None
    target = container
    kind, _, name = resource.partition(".")
    reqs = target.resources
    values = (reqs.limits if kind == "limits" else reqs.requests) if reqs else None
    raw = (values or {}).get(name)
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    quantity = parse_quantity(raw) or 0
    unit = parse_quantity(divisor or "1") or 1
    return str(math.ceil(quantity / unit))


async def _env_var(
    pod: Pod,
    container: Container,
    var: EnvVar,
    env: Mapping[str, str],
    lookup: Lookup,
    node_allocatable: Mapping[str, str],
) -> str | None:
    namespace = pod.metadata.namespace if pod.metadata else None
    assert namespace is not None
    if var.valueFrom is None:
        return expand(var.value or "", env)
    source = var.valueFrom
    if source.fieldRef is not None:
        return field_value(pod, source.fieldRef.fieldPath)
    if source.resourceFieldRef is not None:
        field = source.resourceFieldRef
        divisor = str(field.divisor) if field.divisor is not None else None
        return resource_value(pod, container, field.resource, divisor, node_allocatable)
    refs: list[tuple[str, SecretKeySelector | ConfigMapKeySelector | None]] = [
        ("Secret", source.secretKeyRef),
        ("ConfigMap", source.configMapKeyRef),
    ]
    for kind, ref in refs:
        if ref is None:
            continue
        data = await lookup(kind, namespace, ref.name or "")
        if data is None:
            if ref.optional:
                return None
            raise EnvError(f'{kind.lower()} "{ref.name}" not found')
        if ref.key not in data:
            if ref.optional:
                return None
            raise EnvError(f"couldn't find key {ref.key} in {kind} {namespace}/{ref.name}")
        return data[ref.key]
    raise EnvError(f"env var {var.name}: unsupported valueFrom")


async def container_env(
    pod: Pod,
    container: Container,
    lookup: Lookup,
    base: Mapping[str, str],
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The full environment of one container process."""
    namespace = pod.metadata.namespace if pod.metadata else None
    assert namespace is not None
    env = dict(base)
    for source in container.envFrom or []:
        ref = source.secretRef or source.configMapRef
        kind = "Secret" if source.secretRef is not None else "ConfigMap"
        if ref is None:
            continue
        data = await lookup(kind, namespace, ref.name or "")
        if data is None:
            if ref.optional:
                continue
            raise EnvError(f'{kind.lower()} "{ref.name}" not found')
        for key, value in data.items():
            env[f"{source.prefix or ''}{key}"] = value
    for var in container.env or []:
        resolved = await _env_var(pod, container, var, env, lookup, node_allocatable)
        if resolved is not None:
            env[var.name] = resolved
    return env


def container_argv(container: Container, env: Mapping[str, str]) -> list[str]:
    """Command and args with `$(VAR)` expanded, as the kubelet does."""
    return [expand(part, env) for part in [*(container.command or []), *(container.args or [])]]
