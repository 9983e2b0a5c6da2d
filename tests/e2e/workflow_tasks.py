"""Task code for the workflow end-to-end tests (child runs, durable waits, tokens), run by
`python -m drover.runner` in task pods.

What really ran is appended by the task code itself to the side-effect ledger
(`tests.e2e.ledger`, `<payload.dir>/ledger`): the tests judge limits and duplicates from it,
not from Drover's records.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path
from typing import Any

import drover
from tests.e2e import ledger as side_effects


def ledger(directory: str, event: str, **fields: Any) -> None:
    side_effects.write(directory, event, **fields)


@drover.step
def stamp() -> float:
    return time.time()


# -- children ------------------------------------------------------------------------------


def square(payload: dict[str, Any]) -> int:
    """A child: records when it ran (after the test opens `gate`, if given)."""
    gate = payload.get("gate")
    while gate and not Path(gate).exists():
        time.sleep(0.05)
    ledger(payload["dir"], "start", x=payload["x"])
    time.sleep(payload.get("sleep", 0.3))
    ledger(payload["dir"], "end", x=payload["x"])
    return int(payload["x"]) ** 2


def fan_out(payload: dict[str, Any]) -> list[int]:
    directory = payload["dir"]
    ledger(directory, "parent-executes")
    items = [{"dir": directory, "x": x, "gate": payload.get("gate")} for x in range(payload["n"])]
    results = drover.batch_trigger_and_wait("square", items)
    ledger(directory, "parent-resumed")
    return [result.unwrap() for result in results]


async def fan_out_async(payload: dict[str, Any]) -> dict[str, Any]:
    directory = payload["dir"]
    await drover.wait_for_async(0.5)  # short: sleeps in the pod
    items = [{"dir": directory, "x": x} for x in range(payload["n"])]
    results = await drover.batch_trigger_and_wait_async("square", items)
    one = await drover.trigger_and_wait_async("square", {"dir": directory, "x": 10})
    return {"squares": [r.unwrap() for r in results], "one": one.unwrap()}


def recurse(payload: dict[str, Any]) -> int:
    """Waits on a child of its own Task (under `limit: 1`) until depth 0."""
    depth = int(payload["depth"])
    ledger(payload["dir"], "recurse", depth=depth)
    if depth == 0:
        return 0
    child = drover.trigger_and_wait("recurse", {"dir": payload["dir"], "depth": depth - 1})
    return 1 + int(child.unwrap())


def trigger_then_die(payload: dict[str, Any]) -> str:
    """SIGKILLed right after its trigger returned, on its first attempt."""
    handle = drover.trigger("square", {"dir": payload["dir"], "x": 3, "sleep": 0.1})
    ledger(payload["dir"], "triggered", child=handle.name, id=handle.id)
    if drover.current_run().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return handle.name


def sleeper(payload: dict[str, Any]) -> dict[str, float]:
    began = stamp()
    ledger(payload["dir"], "waits", seconds=payload["seconds"])
    drover.wait_for(payload["seconds"])
    resumed = time.time()
    ledger(payload["dir"], "woke")
    return {"began": began, "resumed": resumed}


def until(payload: dict[str, Any]) -> str:
    drover.wait_until(dt.datetime.fromisoformat(payload["until"]))
    return "woke"


def approval(payload: dict[str, Any]) -> dict[str, Any]:
    token = drover.create_token(payload.get("timeout", "1h"), tags=["approval"])
    ledger(payload["dir"], "token", id=token.id, url=token.url)
    result = drover.wait_for_token(token)
    return {"ok": result.ok, "data": result.data, "timedOut": result.timed_out}


def napper(payload: dict[str, Any]) -> str:
    ledger(payload["dir"], "start", x=payload["x"])
    time.sleep(payload["sleep"])
    ledger(payload["dir"], "end", x=payload["x"])
    return "rested"


def waits_on_nappers(payload: dict[str, Any]) -> None:
    items = [{"dir": payload["dir"], "x": i, "sleep": s} for i, s in enumerate(payload["sleeps"])]
    drover.batch_trigger_and_wait("napper", items)


def fails(payload: dict[str, Any]) -> None:
    raise drover.AbortRun("customer 42 does not exist")


def awaits_a_failure(payload: dict[str, Any]) -> dict[str, Any]:
    result = drover.trigger_and_wait("fails", {})
    try:
        result.unwrap()
    except drover.ChildRunFailed as exc:
        return {"ok": result.ok, "phase": result.phase, "error": result.error, "raised": str(exc)}
    return {"ok": result.ok}


def bad_child_payload(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        drover.trigger("typed", {"count": "many"})
    except drover.InvalidRequestError as exc:
        return {"refused": exc.message, "status": exc.status}
    return {"refused": None}
