"""Webhook signing keys, written to the Secret `<task>-webhook` (owned by the Task) for the
people who configure senders.

The operator never reads Secrets: the key lives in Postgres, and the Secret is only created
and overwritten. A Secret it did not create is never touched (its name is taken: the Task's
webhook waits, with a warning). To notice a deleted Secret without reading it, each key's
Secret is written again every so often: a different UID means it was deleted and created
anew, and the key is then rotated — deleting the Secret is how users rotate it.
"""

from __future__ import annotations

import datetime as dt
import logging

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Secret

from drover.protocol.names import API_VERSION, LABEL_TASK
from drover_operator.domain.pods import label_value
from drover_operator.domain.webhooks import SECRET_KEY, secret_name, signing_secret
from drover_operator.kube import NETWORK_ERRORS
from drover_operator.store import Store
from drover_operator.store.webhooks import WebhookKey

log = logging.getLogger(__name__)


class WebhookSecrets:
    """Keeps each webhook's Secret in step with its key."""

    def __init__(self, store: Store, client: AsyncClient, every: dt.timedelta) -> None:
        self.store = store
        self.client = client
        self.every = every
        self._warned: set[tuple[str, str]] = set()

    async def sync(self) -> None:
        await self.store.webhooks.drop_stale()
        for webhook in await self.store.webhooks.due(self.every, 100):
            try:
                await self._sync(webhook)
            except (ApiError, *NETWORK_ERRORS) as exc:
                log.warning("webhook Secret of %s/%s: %s", webhook.namespace, webhook.task, exc)

    async def _sync(self, webhook: WebhookKey) -> None:
        if webhook.secret_uid is None:
            uid = await self._create(webhook)
            if uid is not None:
                await self.store.webhooks.written(webhook, uid)
            return
        uid = await self._overwrite(webhook)
        if uid is not None:
            await self.store.webhooks.written(webhook, uid)
            return
        # Deleted: a new key, in a new Secret (unless someone took the name meanwhile).
        rotated = await self.store.webhooks.rotate(webhook)
        if rotated is None:
            return
        log.info(
            "webhook Secret of %s/%s was deleted: key rotated", webhook.namespace, webhook.task
        )
        uid = await self._create(rotated)
        if uid is not None:
            await self.store.webhooks.written(rotated, uid)

    def _body(self, webhook: WebhookKey, uid: str | None = None) -> Secret:
        return Secret(
            metadata=ObjectMeta(
                name=secret_name(webhook.task),
                namespace=webhook.namespace,
                uid=uid,
                labels={LABEL_TASK: label_value(webhook.task)},
                ownerReferences=[
                    OwnerReference(
                        apiVersion=API_VERSION,
                        kind="Task",
                        name=webhook.task,
                        uid=webhook.task_uid,
                        controller=True,
                    )
                ],
            ),
            type="Opaque",
            stringData={SECRET_KEY: signing_secret(webhook.key).decode()},
        )

    async def _create(self, webhook: WebhookKey) -> str | None:
        """Create the Secret; None if its name is taken by a Secret that is not ours."""
        try:
            created = await self.client.create(self._body(webhook))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            key = (webhook.namespace, webhook.task)
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "webhook of %s/%s: a Secret %s exists that Drover did not create; "
                    "delete or rename it",
                    webhook.namespace,
                    webhook.task,
                    secret_name(webhook.task),
                )
            return None
        self._warned.discard((webhook.namespace, webhook.task))
        return created.metadata.uid if created.metadata else None

    async def _overwrite(self, webhook: WebhookKey) -> str | None:
        """Write the key into our Secret, its UID a precondition (so the API server never
        lets this touch another Secret of that name); None if ours is gone."""
        try:
            written = await self.client.apply(
                self._body(webhook, uid=webhook.secret_uid), force=True
            )
        except ApiError as exc:
            # 409: no object has that UID (ours was deleted). 422: the name is another
            # object's (the UID cannot change): ours was deleted, someone took the name.
            if exc.status.code in (404, 409, 422):
                return None
            raise
        return written.metadata.uid if written.metadata else None
