"""Task code for the chaos suite (`tests.e2e.chaos`), run by `python -m drover.runner` in task
pods. Every side effect is a row in the side-effect ledger (`tests.e2e.ledger`): a step's row
carries a random execution id, which the step returns, so the run's output names the
execution whose checkpoint Drover accepted for each step."""

from __future__ import annotations

import time
from typing import Any

import drover
from tests.e2e import ledger

STEPS = 5


@drover.step("effect")
def effect(directory: str, index: int, seconds: float) -> str:
    execution = ledger.write(directory, "effect", step=f"s{index}")
    time.sleep(seconds)
    return execution


def five_steps(payload: dict[str, Any]) -> list[str]:
    """Five steps, each with one side effect; `done` once all returned (the slot's work is
    over: the pod only tears down after this)."""
    directory = payload["dir"]
    executions = [effect(directory, i, payload.get("seconds", 0.4)) for i in range(STEPS)]
    ledger.write(directory, "done")
    return executions


def child(payload: dict[str, Any]) -> int:
    ledger.write(payload["dir"], "child", step=str(payload["x"]))
    time.sleep(0.3)
    ledger.write(payload["dir"], "done")
    return int(payload["x"]) ** 2


def parent(payload: dict[str, Any]) -> list[int]:
    """Two children, waited for durably."""
    items = [{"dir": payload["dir"], "x": x} for x in range(2)]
    results = drover.batch_trigger_and_wait("chaos-child", items)
    ledger.write(payload["dir"], "done")
    return [r.unwrap() for r in results]
