"""Task code for the step benchmark, run in a task pod by `python -m drover.runner`."""

from __future__ import annotations

import time
from typing import Any

import drover


@drover.step("noop")
def noop_step(i: int) -> int:
    return i


def many_steps(payload: dict[str, Any]) -> dict[str, Any]:
    """`steps` trivial durable steps, timed inside the task: the checkpoint path only."""
    count = int(payload["steps"])
    started = time.perf_counter()
    for i in range(count):
        noop_step(i)
    return {"steps": count, "seconds": time.perf_counter() - started}
