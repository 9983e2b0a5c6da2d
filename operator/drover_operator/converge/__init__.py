"""Make Kubernetes match what the store committed: the only place that writes to Kubernetes.

Every action is idempotent and retried on a later pass when it fails; none decides anything
(the decisions are in the store already). One class per kind of object written.
"""

from __future__ import annotations

import asyncio

from lightkube import AsyncClient

from drover_operator.converge.events import EventPoster
from drover_operator.converge.finalizers import Finalizers
from drover_operator.converge.pods import PodConverger
from drover_operator.converge.status import StatusConverger
from drover_operator.converge.taskruns import TaskRunWriter
from drover_operator.converge.webhooks import WebhookSecrets
from drover_operator.kube import PUBLISH_CONCURRENCY
from drover_operator.settings import OperatorSettings
from drover_operator.store import Store


class Converger:
    """All of the converger's parts, over one Kubernetes client."""

    def __init__(
        self,
        settings: OperatorSettings,
        store: Store,
        client: AsyncClient,
        signing_key: bytes | None,
    ) -> None:
        self.client = client
        # Status and Events share one bound (see `PUBLISH_CONCURRENCY`).
        writes = asyncio.Semaphore(PUBLISH_CONCURRENCY)
        self.pods = PodConverger(settings, store, client, signing_key)
        self.status = StatusConverger(settings, store, client, writes)
        self.events = EventPoster(store, client, settings.loop.batch_size, writes)
        self.finalizers = Finalizers(client)
        self.taskruns = TaskRunWriter(client)
        self.webhooks = WebhookSecrets(store, client, settings.loop.history_interval)


__all__ = ["Converger"]
