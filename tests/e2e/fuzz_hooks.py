"""Schemathesis hooks for fuzzing the run API with real credentials: every call to
`/v1/runs/{run_id}/...` gets a live attempt's token and its run id, taken in turn from a pool
(calls that end an attempt use it up, so the pool is large), so that generated bodies get
past authentication and reach the handlers. Loaded with SCHEMATHESIS_HOOKS; the pool is the
JSON file DROVER_FUZZ_POOL names."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import schemathesis

_POOL: dict[str, Any] = json.loads(Path(os.environ["DROVER_FUZZ_POOL"]).read_text())
_ATTEMPTS = itertools.cycle(_POOL["attempts"])


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if not case.operation.path.startswith("/v1/runs/{run_id}"):
        return
    run_id, token = next(_ATTEMPTS)
    case.path_parameters = {**(case.path_parameters or {}), "run_id": run_id}
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
