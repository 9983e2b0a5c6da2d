"""Task code for the dashboard's end-to-end tests, run by `python -m drover.runner` in task
pods."""

from __future__ import annotations

import logging
import time
from typing import Any

import drover

log = logging.getLogger("dashboard-tasks")


def ticks(payload: dict[str, Any]) -> int:
    """Logs `tick N` twice a second, `n` times (a run to watch live, and to cancel)."""
    count = int(payload.get("n", 240))
    for i in range(count):
        log.info("tick %d", i)
        time.sleep(0.5)
    return count


@drover.step
def fetch(customer: str) -> dict[str, str]:
    log.info("fetching %s", customer)
    return {"customer": customer}


@drover.step
def store(record: dict[str, str]) -> str:
    log.info("storing %s", record["customer"])
    return "stored"


def sync(payload: dict[str, Any]) -> dict[str, Any]:
    """Two steps; the payload is shown back in the output."""
    return {"result": store(fetch(str(payload.get("customer", "cus_1")))), "payload": payload}


def child(payload: dict[str, Any]) -> int:
    return int(payload["x"]) * 2


def parent(payload: dict[str, Any]) -> list[int]:
    """A step, then `n` children it waits for."""
    fetch("parent")
    results = drover.batch_trigger_and_wait("child", [{"x": x} for x in range(payload["n"])])
    return [r.unwrap() for r in results]


def approval(payload: Any) -> Any:
    """Waits for a person: a waitpoint token, completed from the Tokens page."""
    token = drover.create_token("1h", tags=["approval"])
    return drover.wait_for_token(token).data
