"""What a Task says about its pods: env, envFrom, resources and the pod template overlay.

These are faithful subsets of core/v1 for the parts users write most (so mistakes are caught
at apply time); the rest of the pod spec is a free-form overlay (`podTemplate.spec`) that the
API server validates when the operator creates the pod.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from drover_operator.crd.base import CEL, CRDModel, JSONObject, rules
from drover_operator.crd.common import LabelName, ObjectName, Quantity, StringMap, parse_quantity

#: The classic C_IDENTIFIER-ish env var name rule (also allows `-` and `.` like core/v1).
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
#: Variables the operator injects into every task pod (run id, API address, credentials).
RESERVED_ENV_PREFIX = "DROVER_"

ConfigKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]


class KeySelector(CRDModel):
    """A key in a Secret or ConfigMap in the Task's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: ConfigKey
    """The key whose value is used."""
    optional: bool | None = None
    """If true, a missing object or key leaves the variable unset instead of failing the pod."""


class FieldSelector(CRDModel):
    """A field of the pod, via the downward API (e.g. `metadata.name`, `status.podIP`)."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Path of the field, e.g. `metadata.namespace`."""
    api_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Schema version the path is written in; defaults to `v1`."""


class ResourceFieldSelector(CRDModel):
    """A resource request or limit of the task container (e.g. `limits.memory`)."""

    resource: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Resource to expose, e.g. `limits.cpu` or `requests.memory`."""
    container_name: LabelName | None = None
    """Container to read from; defaults to the task container."""
    divisor: Quantity | None = None
    """Unit for the exposed value, e.g. `1Mi`; defaults to `1`."""


_ONE_SOURCE = (
    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef),"
    " has(self.resourceFieldRef)].filter(x, x).size() == 1"
)


class EnvVarSource(CRDModel):
    """Where an env var's value comes from; exactly one source must be set."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                _ONE_SOURCE,
                "exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef"
                " must be set",
            )
        )
    )

    secret_key_ref: KeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: KeySelector | None = None
    """A key of a ConfigMap."""
    field_ref: FieldSelector | None = None
    """A pod field (downward API)."""
    resource_field_ref: ResourceFieldSelector | None = None
    """A container resource request or limit."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        sources = [self.secret_key_ref, self.config_map_key_ref, self.field_ref]
        if sum(s is not None for s in [*sources, self.resource_field_ref]) != 1:
            raise ValueError(
                "exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef"
                " must be set"
            )
        return self


class EnvVar(CRDModel):
    """An environment variable for the task container."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                "!(has(self.value) && has(self.valueFrom))",
                "value and valueFrom are mutually exclusive",
                field_path=".valueFrom",
            )
        )
    )

    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN),
        CEL(
            f"!self.startsWith('{RESERVED_ENV_PREFIX}')",
            f"names starting with {RESERVED_ENV_PREFIX} are reserved for Drover",
        ),
    ]
    """Variable name; names starting with `DROVER_` are reserved."""
    value: Annotated[str, StringConstraints(max_length=32768)] | None = None
    """Literal value (`$(OTHER)` references expand as in core/v1)."""
    value_from: EnvVarSource | None = None
    """Take the value from a Secret, ConfigMap, pod field or resource instead."""

    @model_validator(mode="after")
    def _check(self) -> EnvVar:
        if self.name.startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"names starting with {RESERVED_ENV_PREFIX} are reserved for Drover")
        if self.value is not None and self.value_from is not None:
            raise ValueError("value and valueFrom are mutually exclusive")
        return self


class ObjectRef(CRDModel):
    """A whole Secret or ConfigMap in the Task's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    optional: bool | None = None
    """If true, a missing object is ignored instead of failing the pod."""


class EnvFromSource(CRDModel):
    """Import every key of a ConfigMap or Secret as environment variables."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                "has(self.configMapRef) != has(self.secretRef)",
                "exactly one of configMapRef or secretRef must be set",
            )
        )
    )

    prefix: Annotated[str, StringConstraints(max_length=253)] | None = None
    """Prepended to every imported key."""
    config_map_ref: ObjectRef | None = None
    """The ConfigMap to import."""
    secret_ref: ObjectRef | None = None
    """The Secret to import."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("exactly one of configMapRef or secretRef must be set")
        return self


ResourceList = Annotated[dict[str, Quantity], Field(max_length=16)]

_REQUESTS_WITHIN_LIMITS = (
    "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
    " || !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k]))"
    " || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)"
)


class ResourceRequirements(CRDModel):
    """Compute resources of the task container, as in core/v1."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            CEL(
                _REQUESTS_WITHIN_LIMITS,
                "every request must be less than or equal to its limit",
                field_path=".requests",
            )
        )
    )

    requests: ResourceList | None = None
    """Minimum resources, e.g. `{cpu: 250m, memory: 256Mi}`; used for scheduling."""
    limits: ResourceList | None = None
    """Maximum resources, e.g. `{memory: 1Gi}`."""

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, request in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError("every request must be less than or equal to its limit")
        return self


class Toleration(CRDModel):
    """Lets task pods schedule onto nodes with a matching taint."""

    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    """Taint key to match; empty with operator `Exists` matches every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` (default) compares `value`; `Exists` matches any value."""
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Taint value to match with operator `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For `NoExecute`: how long the pod stays bound after the taint appears."""


class LocalObjectReference(CRDModel):
    """A reference to an object in the same namespace."""

    name: ObjectName
    """Name of the object."""


class NamedObject(CRDModel):
    """A named core/v1 structure (volume, container); other fields pass through."""

    model_config = ConfigDict(extra="allow")

    name: LabelName
    """Name of the entry."""


class PodSpecOverlay(CRDModel):
    """Fields merged into the pod spec Drover builds. Common fields are typed; any other
    core/v1 PodSpec field is passed through and validated when the pod is created.
    Drover owns `restartPolicy` and the task container's image, command, args and env."""

    model_config = ConfigDict(extra="allow")

    node_selector: StringMap | None = None
    """Node labels the pod must match."""
    tolerations: Annotated[list[Toleration], Field(max_length=64)] | None = None
    """Taints the pod tolerates."""
    affinity: JSONObject | None = None
    """Node/pod (anti-)affinity, as in core/v1."""
    volumes: (
        Annotated[
            list[NamedObject],
            Field(
                max_length=64,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Volumes for the pod; mount them via a `containers` entry named `task`."""
    containers: (
        Annotated[
            list[NamedObject],
            Field(
                max_length=16,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """An entry named `task` is merged into the task container (e.g. `volumeMounts`,
    `securityContext`); other entries are added as sidecar containers."""
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] | None = None
    """Secrets used to pull the image."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the pods."""
    security_context: JSONObject | None = None
    """Pod-level security context, as in core/v1."""


class PodTemplateMetadata(CRDModel):
    """Labels and annotations added to every task pod (Drover's own `drover.dev/*` win)."""

    labels: StringMap | None = None
    """Extra pod labels."""
    annotations: StringMap | None = None
    """Extra pod annotations."""


class PodTemplate(CRDModel):
    """Overrides for the pods Drover creates, one per attempt."""

    metadata: PodTemplateMetadata | None = None
    """Extra labels and annotations for task pods."""
    spec: PodSpecOverlay | None = None
    """Pod spec fields merged into the generated pod spec."""

    def spec_overlay(self) -> dict[str, Any]:
        """The overlay as a core/v1 PodSpec fragment (camelCase), ready to merge."""
        return self.spec.to_k8s() if self.spec else {}
