"""Turn a pydantic model's JSON Schema into a structural OpenAPI v3 schema for a CRD.

Kubernetes accepts only "structural" schemas: no `$ref`, a `type` on every node (unless the
node preserves unknown fields or is int-or-string), no `additionalProperties` next to
`properties`, no `nullable` unions and no titles it does not need. Pydantic emits `$defs`
with references, `anyOf [X, null]` for optional fields and `additionalProperties: false` for
`extra="forbid"`; this module rewrites exactly those constructs and refuses anything else,
so a model change that cannot be expressed fails loudly at `make crds` instead of at apply.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from drover_operator.crd.base import VALIDATIONS

Schema = dict[str, Any]

_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_INT_OR_STRING = "x-kubernetes-int-or-string"
_NULL = {"type": "null"}
#: Keys a structural schema node may carry; anything else pydantic emits is a bug here.
_ALLOWED = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "default",
        "enum",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "anyOf",
        VALIDATIONS,
        _PRESERVE,
        _INT_OR_STRING,
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    }
)


class UnsupportedSchemaError(ValueError):
    """The model uses a JSON Schema construct that has no structural equivalent."""


def structural_schema(model: type[BaseModel]) -> Schema:
    """The model's schema, structural, with `$ref`s inlined and keys sorted."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Schema] = raw.pop("$defs", {})
    result: Schema = _sorted(_convert(raw, defs, path=model.__name__))
    return result


def _merge(target: Schema, overrides: Schema) -> Schema:
    """Field-level keys (description, default, rules) win over the referenced definition's;
    CEL rules from both places are kept."""
    merged = {**target, **overrides}
    if VALIDATIONS in target and VALIDATIONS in overrides:
        merged[VALIDATIONS] = [*target[VALIDATIONS], *overrides[VALIDATIONS]]
    return merged


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").removeprefix("#/$defs/")
        node = _merge(_convert(defs[name], defs, path), node)
    if "anyOf" in node and not node.get(_INT_OR_STRING):
        options = [o for o in node.pop("anyOf") if o != _NULL]
        if len(options) != 1:
            # Real unions are not structural; express them with CEL on a single type.
            raise UnsupportedSchemaError(f"{path}: union types are not supported: {options}")
        node = _merge(_convert(options[0], defs, path), node)
    node.pop("title", None)
    if "description" in node:  # docstrings wrap lines; descriptions should not
        node["description"] = " ".join(node["description"].split())
    if "default" in node and node["default"] is None:
        del node["default"]  # `X | None = None` just means "optional"
    additional = node.pop("additionalProperties", None)
    if additional is True:  # extra="allow": keep what we do not model
        node[_PRESERVE] = True
    elif isinstance(additional, dict):
        node["additionalProperties"] = _convert(additional, defs, f"{path}.*")
    if "properties" in node:
        node["properties"] = {
            key: _convert(value, defs, f"{path}.{key}") for key, value in node["properties"].items()
        }
    if "items" in node:
        node["items"] = _convert(node["items"], defs, f"{path}[]")
    unknown = set(node) - _ALLOWED
    if unknown:
        raise UnsupportedSchemaError(f"{path}: unsupported keys {sorted(unknown)}")
    if "type" not in node and not (node.get(_PRESERVE) or node.get(_INT_OR_STRING)):
        raise UnsupportedSchemaError(f"{path}: every node needs a type")
    return node


def _sorted(value: Any) -> Any:
    """Sort mapping keys recursively (lists keep their order) for byte-stable output."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def iter_nodes(schema: Schema, path: str = "") -> list[tuple[str, Schema]]:
    """Every schema node with its dotted path (`spec.retry.maxAttempts`, `spec.env[]`)."""
    found = [(path, schema)]
    for key, child in schema.get("properties", {}).items():
        found += iter_nodes(child, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        found += iter_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += iter_nodes(schema["additionalProperties"], f"{path}.*")
    return found
