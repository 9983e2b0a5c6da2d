"""Kubernetes-style types shared by Task and TaskRun: names, label maps, quantities, conditions."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema

from drover_operator.crd.base import CRDModel

DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

#: Names of Tasks, Secrets, ConfigMaps, ServiceAccounts (RFC 1123 subdomain).
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
#: Names that end up as DNS labels (volumes, containers).
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]

#: Label/annotation-style string maps. Keys are checked by the API server itself when the
#: operator copies them onto pods; here we bound size so CEL cost estimates stay finite.
StringMap = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)
]

# --- Quantities ------------------------------------------------------------------------------

#: Resource quantities (`500m`, `1Gi`, `2`) as in core/v1, without a sign (negative makes no
#: sense for requests or limits).
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_SUFFIX: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: int | str) -> Decimal:
    """Numeric value of a Kubernetes quantity (`1Gi` → 1073741824, `250m` → 0.25)."""
    if isinstance(value, int):
        return Decimal(value)
    if not _QUANTITY.fullmatch(value):
        raise ValueError(f"invalid quantity {value!r}: expected e.g. 500m, 1Gi, 2")
    match = re.fullmatch(r"([0-9.]+)([eE][-+]?[0-9.]+)?([a-zA-Z]*)", value)
    assert match is not None  # the quantity pattern above guarantees this shape
    number, exponent, suffix = match.groups()
    return Decimal(number + (exponent or "")) * _SUFFIX[suffix]


def _check_quantity(value: int | str) -> int | str:
    parse_quantity(value)
    return value


Quantity = Annotated[
    Annotated[int, Field(ge=0)] | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# --- Conditions ------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CRDModel):
    """A metav1.Condition: the latest observation of one aspect of the object's state."""

    type: Annotated[
        str,
        StringConstraints(
            max_length=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
    ]
    """Condition type in CamelCase, e.g. `Ready` (Task) or `Succeeded` (TaskRun)."""
    status: ConditionStatus
    """`True`, `False` or `Unknown` (still in progress / not yet known)."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` the condition was computed from."""
    last_transition_time: datetime
    """When the status last changed (RFC 3339)."""
    reason: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        ),
    ]
    """Machine-readable CamelCase reason for the last transition, e.g. `BackoffLimitReached`."""
    message: Annotated[str, StringConstraints(max_length=32768)]
    """Human-readable details about the transition (may be empty)."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


def _distinct_types(conditions: list[Condition]) -> list[Condition]:
    if len({c.type for c in conditions}) != len(conditions):
        raise ValueError("condition types must be unique")
    return conditions


#: Status conditions, one entry per type (a list-map keyed by `type`).
ConditionList = Annotated[Conditions, AfterValidator(_distinct_types)]
