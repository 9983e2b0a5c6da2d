"""Checks a CRD schema cannot make: payloadSchema is a JSON Schema, payloads satisfy it.
Results surface in conditions, not at apply time. Cron expressions and time zones are
checked by the scheduler (`domain.cron.CronSchedule.parse`): a bad schedule stops only the
scheduled runs, so it is not a problem here."""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from drover_operator.crd import TaskSpec


def task_problem(spec: TaskSpec) -> str | None:
    """Why no run of a Task can start (`Reason: message`), or None when they can."""
    if spec.payload_schema is not None:
        try:
            jsonschema.validators.validator_for(spec.payload_schema).check_schema(
                spec.payload_schema
            )
        except jsonschema.SchemaError as exc:
            return f"InvalidPayloadSchema: spec.payloadSchema is not a JSON Schema: {exc.message}"
    return None


def payload_problem(spec: TaskSpec, payload: Any) -> str | None:
    """Why a run's payload does not fit the Task's payloadSchema, naming the field."""
    if spec.payload_schema is None:
        return None
    validator = jsonschema.validators.validator_for(spec.payload_schema)(spec.payload_schema)
    error = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    where = "payload" + "".join(
        f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
    )
    return f"{where}: {error.message}"


def has_nul(value: Any) -> bool:
    """Whether a NUL character (`\\u0000`) is in any string or key of `value`: Postgres can
    store it neither in text nor in jsonb."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
