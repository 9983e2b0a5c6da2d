"""Task code for the workflow benchmark, run in a task pod by `python -m drover.runner`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import drover


def sleep_until(payload: dict[str, Any]) -> str:
    """Suspends until `payload.until`, then returns."""
    drover.wait_until(dt.datetime.fromisoformat(payload["until"]))
    return "woke"
