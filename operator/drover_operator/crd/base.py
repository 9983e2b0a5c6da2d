"""Building blocks for the resource models: base config, CEL rules, free-form JSON fields.

CEL rules live next to the fields they guard (as `Annotated` metadata or model-level
`json_schema_extra`), so the generated CRD and the models cannot drift apart. The models
also check the same rules in Python, so the operator can trust what it parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

VALIDATIONS = "x-kubernetes-validations"


@dataclass(frozen=True)
class CEL:
    """One `x-kubernetes-validations` rule, evaluated by the API server on create/update."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The handler may return a bare $ref; schema.py merges sibling rules into the target.
        schema = handler(core_schema)
        schema.setdefault(VALIDATIONS, []).append(self.as_dict())
        return schema


def rules(*cel: CEL) -> dict[str, Any]:
    """Model-level rules, for `ConfigDict(json_schema_extra=rules(...))`."""
    return {VALIDATIONS: [c.as_dict() for c in cel]}


def immutable(what: str = "field") -> CEL:
    """A transition rule: the value may not change once set (it only runs on updates)."""
    return CEL("self == oldSelf", f"{what} is immutable", reason="FieldValueForbidden")


class CRDModel(BaseModel):
    """Base for every spec/status model: camelCase on the wire, snake_case in Python.

    Unknown fields are rejected: the API server prunes them before the operator sees an
    object, so an unknown key here means a bug, not user input.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The object as it is written to the API server (camelCase, unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


#: Any JSON value (object, array, string, number, bool). The API server stores it untouched;
#: a structural schema expresses "anything" as preserve-unknown-fields without a type.
JSONValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]

#: A free-form JSON object (e.g. a JSON Schema document, a pod spec overlay).
JSONObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
