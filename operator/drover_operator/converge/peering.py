"""kopf's peering object, which replicas with the same peering name elect their active one
through. kopf patches it but never creates it, and a replica without one stays paused and
silent, so the operator makes sure it exists before kopf starts."""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta

from drover_operator.errors import PeeringError
from drover_operator.kube import NETWORK_ERRORS, status_code

log = logging.getLogger(__name__)

ClusterPeering = create_global_resource(
    "kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings"
)
NamespacedPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")

_HOW = (
    "apply kopf's peering CRDs and the object (`kubectl apply -f crds/kopf.dev_peerings.yaml`, "
    "then {create}), grant the operator `create` on {resource}, or run a single replica with "
    "--standalone (DROVER_STANDALONE=true)"
)


class Peering(Enum):
    """What the operator found."""

    READY = "ready"  # the object exists
    CREATED = "created"  # it did not: the operator created it
    UNAVAILABLE = "unavailable"  # kopf's peering CRDs are not installed


async def ensure_peering(
    client: AsyncClient, name: str, namespaces: list[str], *, patience: float = 60.0
) -> Peering:
    """Make sure the peering object `name` exists: cluster-wide, or in each of `namespaces`.
    Raises `PeeringError` saying what to do when it is missing and cannot be created. An API
    server that is briefly unable to answer (starting, CRD storage initializing) is asked
    again for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    delay = 0.25
    while True:
        try:
            return await _ensure(client, name, namespaces)
        except (ApiError, *NETWORK_ERRORS) as exc:
            code = status_code(exc)
            if (code is not None and code != 429 and code < 500) or time.monotonic() > deadline:
                raise PeeringError(f"cannot check the peering object {name!r}: {exc}") from None
            log.info("checking the peering object %s: %s; retrying", name, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _ensure(client: AsyncClient, name: str, namespaces: list[str]) -> Peering:
    created = False
    where_to_look: list[str | None] = [*namespaces] if namespaces else [None]
    for namespace in where_to_look:
        resource = ClusterPeering if namespace is None else NamespacedPeering
        kind = "clusterkopfpeerings" if namespace is None else "kopfpeerings"
        where = "" if namespace is None else f" -n {namespace}"
        how = _HOW.format(
            create=f"`kubectl create -f -{where}` of a {resource.__name__} named {name}",
            resource=f"{kind}.kopf.dev",
        )
        try:
            found = await _exists(client, name, namespace)
        except (ApiError, httpx2.HTTPStatusError) as exc:
            code = status_code(exc)
            if code == 404:  # the resource type is not served: no CRDs
                return Peering.UNAVAILABLE
            if code in (401, 403):
                raise PeeringError(f"cannot read {kind} ({exc}): {how}") from None
            raise
        if found:
            continue
        try:
            await client.create(resource(metadata=ObjectMeta(name=name, namespace=namespace)))
        except ApiError as exc:
            if exc.status.code == 409:
                continue  # another replica created it
            if exc.status.code in (401, 403, 422):
                raise PeeringError(
                    f'the peering object "{name}" does not exist and could not be created '
                    f"({exc.status.message}): {how}"
                ) from None
            raise
        created = True
        log.info("created the peering object %s%s", name, f" in {namespace}" if namespace else "")
    return Peering.CREATED if created else Peering.READY


async def _exists(client: AsyncClient, name: str, namespace: str | None) -> bool:
    # `list` with a name selector: the chart grants list and watch on peerings, not get.
    selector: dict[str, Any] = {"metadata.name": name}
    if namespace is None:
        async for _ in client.list(ClusterPeering, fields=selector):
            return True
    else:
        async for _ in client.list(NamespacedPeering, namespace=namespace, fields=selector):
            return True
    return False
