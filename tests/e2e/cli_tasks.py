"""Task code for the command line's end-to-end tests, run by `python -m drover.runner` in
task pods."""

from __future__ import annotations

import logging
import time
from typing import Any

import drover

log = logging.getLogger("cli-tasks")


@drover.step
def prepare(seconds: float) -> str:
    log.info("preparing for %ss", seconds)
    time.sleep(seconds)
    return "prepared"


@drover.step
def finish(what: str) -> str:
    log.info("finishing %s", what)
    return f"{what} and finished"


def two_steps(payload: dict[str, Any]) -> dict[str, Any]:
    """Two steps, the first taking `sleep` seconds; logs a line in each."""
    prepared = prepare(float(payload.get("sleep", 0.5)))
    return {"result": finish(prepared), "payload": payload}


def slow(payload: dict[str, Any]) -> str:
    """Sleeps `seconds` in steps of a second (so the live line shows steps done)."""
    for i in range(int(payload.get("seconds", 3))):
        drover.step(f"second-{i}")(time.sleep)(1)
    return "rested"


def fails(payload: Any) -> None:
    log.error("about to give up")
    raise drover.AbortRun("customer 42 does not exist")


def approval(payload: Any) -> Any:
    """Waits for a person: a waitpoint token (`drover tokens complete`)."""
    token = drover.create_token("1h", tags=["approval"])
    return drover.wait_for_token(token).data


def child(payload: dict[str, Any]) -> int:
    return int(payload["x"]) * 2


def parent(payload: dict[str, Any]) -> list[int]:
    """Starts `n` children and waits for them (the describe tree)."""
    results = drover.batch_trigger_and_wait("child", [{"x": x} for x in range(payload["n"])])
    return [r.unwrap() for r in results]
