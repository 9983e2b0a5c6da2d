"""Task code for the SDK examples (`entrypoint: examples.tasks:...`).

In a real deployment this module lives in your task image; on the local cluster the
repository is the image, so the node agent's pods can import it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def sync_customer(payload: dict[str, Any]) -> dict[str, Any]:
    """Pretend to copy one customer's orders into a CRM."""
    customer = payload["customerId"]
    log.info("syncing customer %s (full=%s)", customer, payload.get("full", False))
    return {"customerId": customer, "ordersCopied": 3}


def nightly_report(payload: dict[str, Any] | None) -> dict[str, Any]:
    """Pretend to build the nightly report."""
    log.info("building the nightly report with %s", payload)
    return {"rows": 42}
