"""Checks a CRD schema cannot make: payloadSchema is a JSON Schema, payloads satisfy it,
cron expressions and time zones exist. Results surface in conditions, not at apply time."""

from __future__ import annotations

import zoneinfo
from typing import Any

import jsonschema
from croniter import croniter
from jsonschema.exceptions import best_match

from drover_operator.crd import TaskSpec


def task_problem(spec: TaskSpec) -> str | None:
    """Why a Task cannot run (`Reason: message`), or None when it can."""
    if spec.payload_schema is not None:
        try:
            jsonschema.validators.validator_for(spec.payload_schema).check_schema(
                spec.payload_schema
            )
        except jsonschema.SchemaError as exc:
            return f"InvalidPayloadSchema: spec.payloadSchema is not a JSON Schema: {exc.message}"
    if spec.schedule is not None:
        try:
            zoneinfo.ZoneInfo(spec.schedule.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f"InvalidTimezone: spec.schedule.timezone {spec.schedule.timezone!r} is unknown"
        if not croniter.is_valid(spec.schedule.cron):
            return f"InvalidSchedule: spec.schedule.cron {spec.schedule.cron!r} is not valid cron"
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
