"""Task code for the SDK end-to-end tests, run by `python -m drover.runner` in task pods.

Side effects are appended to `<payload.dir>/effects` so tests can count what really ran.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import drover

log = logging.getLogger(__name__)


def _effect(directory: str, what: str) -> None:
    with Path(directory, "effects").open("a") as out:
        out.write(f"{what}\n")


class Order(BaseModel):
    id: int
    total: float


@drover.step
def fetch(directory: str) -> Order:
    _effect(directory, "fetch")
    return Order(id=7, total=12.5)


@drover.step("charge")
def charge(directory: str, order: Order) -> dict[str, Any]:
    _effect(directory, "charge")
    return {"charged": order.total}


@drover.step
def ship(directory: str, crash: bool) -> str:
    if crash and drover.current_run().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # dies during step 3, after steps 1-2 finished
    _effect(directory, "ship")
    return "shipped"


def three_steps(payload: dict[str, Any]) -> dict[str, Any]:
    directory = payload["dir"]
    order = fetch(directory)
    assert isinstance(order, Order)  # replayed checkpoints come back as the annotated type
    charged = charge(directory, order)
    log.info("charged %s", charged)
    shipped = ship(directory, payload.get("crash", False))
    drover.current_run().set_metadata(shipped=True)
    return {
        "order": order.id,
        "charged": charged["charged"],
        "status": shipped,
        "attempt": drover.current_run().attempt,
    }


def aborts(payload: dict[str, Any]) -> None:
    try:
        raise drover.AbortRun("customer does not exist")
    except Exception:
        pass


class _OopsError(Exception):
    """A class name no Kubernetes condition reason can be (it starts with `_`)."""


def raises_a_private_error(payload: dict[str, Any]) -> None:
    raise _OopsError("the name of this error starts with an underscore")


def changes_its_mind(payload: dict[str, Any]) -> None:
    """Attempt 1 records step `a` then fails; attempt 2 calls step `b` at that position."""
    if drover.current_run().attempt == 1:
        drover.step("a")(lambda: 1)()
        raise RuntimeError("fail once")
    drover.step("b")(lambda: 2)()


def _part(directory: str, name: str, value: Any) -> Any:
    _effect(directory, name)
    return value


def freezes(payload: dict[str, Any]) -> str:
    """Attempt 1 prints its pid and waits to be frozen (SIGSTOP) by the test."""
    done = drover.step("prepare")(_part)(payload["dir"], "prepare", "ready")
    if drover.current_run().attempt == 1:
        print(f"pid {os.getpid()}", flush=True)
        time.sleep(600)
    return f"{done} on attempt {drover.current_run().attempt}"


def slow_steps(payload: dict[str, Any]) -> int:
    """Many small steps over a few seconds: long enough to restart Postgres meanwhile."""
    total = 0
    for i in range(payload["steps"]):
        total += drover.step(f"part-{i}")(_part)(payload["dir"], f"part-{i}", i)
        time.sleep(payload.get("pause", 0.1))
    return total


@dataclass
class Greeting:
    name: str
    times: int = 1


def greets(payload: Greeting) -> str:
    return " ".join([f"hello {payload.name}"] * payload.times)


async def async_task(payload: dict[str, Any]) -> dict[str, Any]:
    @drover.step("double")
    async def double(x: int) -> int:
        return x * 2

    return {"value": await double(payload["x"])}


def waits(payload: Any) -> None:
    time.sleep(600)
