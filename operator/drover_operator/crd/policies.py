"""Admission policies shipped with the CRDs, for rules a CRD's own CEL cannot express.

A TaskRun's `spec.payload` is any JSON, so its schema is `x-kubernetes-preserve-unknown-fields`
without a type, and CRD validation rules cannot see such a field (`self.payload` does not
compile; a rule on the whole spec could compare it, but could not leave `cancel` out). A
ValidatingAdmissionPolicy sees the object as plain JSON, so it can compare the payload before
and after an update. It is cluster-scoped and applies to every TaskRun, like the CRD.
"""

from __future__ import annotations

from typing import Any

from drover.protocol.names import GROUP

#: `<what>.drover.dev`, the policy and its binding.
PAYLOAD_POLICY = f"taskrun-payload-immutable.{GROUP}"

_UNCHANGED = (
    "has(object.spec.payload) == has(oldObject.spec.payload) && "
    "(!has(object.spec.payload) || object.spec.payload == oldObject.spec.payload)"
)


def payload_policy() -> list[dict[str, Any]]:
    """The policy refusing any change to a TaskRun's payload, and its binding (Deny)."""
    labels = {"app.kubernetes.io/part-of": "drover"}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": PAYLOAD_POLICY, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["taskruns"],  # not taskruns/status
                    }
                ]
            },
            "validations": [
                {
                    "expression": _UNCHANGED,
                    "message": "spec.payload: Forbidden: field is immutable (the payload is "
                    "what the run received; create another TaskRun to run with another)",
                    "reason": "Invalid",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": PAYLOAD_POLICY, "labels": labels},
        "spec": {"policyName": PAYLOAD_POLICY, "validationActions": ["Deny"]},
    }
    return [policy, binding]
