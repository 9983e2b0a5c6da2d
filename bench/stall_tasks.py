"""Task code for the heartbeat and stall benchmarks, run in a task pod by the runner."""

from __future__ import annotations

import os
import time
from typing import Any

import drover


def freezes(payload: Any) -> str:
    """Attempt 1 prints its pid and waits to be frozen (SIGSTOP) by the bench; later attempts
    finish at once."""
    if drover.current_run().attempt == 1:
        print(f"pid {os.getpid()}", flush=True)
        time.sleep(3600)
    return f"done on attempt {drover.current_run().attempt}"


def never_runs(payload: Any) -> None:
    """The Task of the simulated runners: its pods are never scheduled."""
    raise RuntimeError("this pod was meant never to run")
