"""Task code for the SDK examples (`entrypoint: examples.tasks:...`).

In a real deployment this module lives in your task image; on the local cluster the
repository is the image, so the node agent's pods can import it.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

import drover

log = logging.getLogger(__name__)


class SyncRequest(BaseModel):
    customerId: str  # noqa: N815 - the payload's JSON field name
    full: bool = False


class Order(BaseModel):
    id: str
    total: float


@drover.step
def fetch_orders(customer_id: str, full: bool) -> list[Order]:
    """Pretend to read the shop's orders (a retry gets the checkpointed list back)."""
    log.info("fetching orders of %s (full=%s)", customer_id, full)
    return [Order(id=f"{customer_id}-1", total=19.9), Order(id=f"{customer_id}-2", total=5.0)]


@drover.step
def push_to_crm(customer_id: str, orders: list[Order]) -> int:
    """Pretend to write them into a CRM."""
    log.info("pushing %d orders of %s", len(orders), customer_id)
    return len(orders)


def sync_customer(payload: SyncRequest) -> dict[str, object]:
    """Copy one customer's orders into a CRM, in two durable steps."""
    orders = fetch_orders(payload.customerId, payload.full)
    copied = push_to_crm(payload.customerId, orders)
    drover.current_run().set_metadata(ordersCopied=copied)
    return {"customerId": payload.customerId, "ordersCopied": copied}


def nightly_report(payload: dict[str, object] | None) -> dict[str, object]:
    """Pretend to build the nightly report."""
    scheduled = drover.current_run().scheduled_time
    log.info("building the nightly report for %s with %s", scheduled, payload)
    return {"rows": 42, "for": scheduled.isoformat() if scheduled else None}


def approve_refund(payload: dict[str, object]) -> dict[str, object]:
    """Wait for a person to approve a refund: the run suspends (no pod, no slot) until
    someone completes its waitpoint token (`drover tokens complete ID --data ...`)."""
    token = drover.create_token("48h", tags=["refund"])
    log.info("waiting for approval of refund %s: token %s", payload.get("refund"), token.id)
    decision = drover.wait_for_token(token)
    return {"refund": payload.get("refund"), "approved": bool(decision.ok and decision.data)}


def sync_customers(payload: dict[str, list[str]]) -> int:
    """Sync several customers, each as a child run of `sync-customer`, and wait for them."""
    items = [{"customerId": customer} for customer in payload["customers"]]
    results = drover.batch_trigger_and_wait("sync-customer", items)
    return sum(1 for result in results if result.ok)
