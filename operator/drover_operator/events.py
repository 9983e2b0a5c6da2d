"""Kubernetes Events on Drover's objects, posted from the store's outboxes."""

from __future__ import annotations

import datetime as dt
import logging

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from drover_operator.crd import API_VERSION

log = logging.getLogger(__name__)


async def post_event(
    client: AsyncClient,
    *,
    kind: str,
    name: str,
    namespace: str,
    uid: str,
    event_name: str,
    type: str,
    reason: str,
    message: str,
    at: dt.datetime,
) -> bool:
    """Post one Event; True when it is there (posted now, or already: `event_name` is
    deterministic, so a retry or a second replica meets AlreadyExists) or can never be
    (its namespace is gone). False: try again later."""
    event = Event(
        metadata=ObjectMeta(name=event_name, namespace=namespace),
        involvedObject=ObjectReference(
            apiVersion=API_VERSION,
            kind=kind,
            name=name,
            namespace=namespace,
            uid=uid,
        ),
        type=type,
        reason=reason,
        message=message[:1024],
        firstTimestamp=at,
        lastTimestamp=at,
        count=1,
        source=EventSource(component="drover-operator"),
        reportingComponent="drover.dev/operator",
        reportingInstance="drover-operator",
    )
    try:
        await client.create(event)
    except ApiError as exc:
        if exc.status.code in (403, 404, 409):
            return True
        log.warning("posting event: %s", exc.status.message)
        return False
    except httpx2.HTTPError:
        return False
    return True
