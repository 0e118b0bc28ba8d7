"""Policy mode: unknown profile names are never silently ignored.

The webhook warns (strict: denies) when a pod, or the namespace's profiles, name a profile that
does not exist. In policy mode each profile is its own policy and none of them knows the
others, so one more ValidatingAdmissionPolicy, compiled from the set of profiles that were
compiled together, says the same: ``unknown sidecar profile(s) X in sidecar.io/inject;
available: …``. Its name has a dot (``sidecar-injector.unknown-profiles``), which no profile
name (a DNS label) can have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sidecar_injector.base import keys
from sidecar_injector.core.inputs import InjectionPolicy
from sidecar_injector.core.policy import (
    API_VERSION,
    MANAGED_BY,
    NAME_PREFIX,
    match_conditions_unscoped,
    namespace_selector,
    requested_names,
    setting_variables,
    unbound_objects,
)
from sidecar_injector.core.policy_cel import string_list

#: what the policy is called after the prefix's last dash
SUFFIX = "unknown-profiles"


def unknown_profiles_name(name_prefix: str = NAME_PREFIX) -> str:
    return name_prefix.rstrip("-") + "." + SUFFIX if name_prefix.rstrip("-") else SUFFIX


def compile_unknown_profiles(
    known: Sequence[str],
    policy: InjectionPolicy,
    *,
    name_prefix: str = NAME_PREFIX,
    binding_selector: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy (and binding) that warns about profile names not in ``known``."""
    name = unknown_profiles_name(name_prefix)
    labels = dict(MANAGED_BY)
    validating = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
                ],
                "namespaceSelector": namespace_selector(policy),
            },
            "failurePolicy": "Fail",
            "matchConditions": match_conditions_unscoped(),
            "variables": [
                *setting_variables(policy),
                {"name": "knownProfiles", "expression": string_list(sorted(known))},
                {"name": "requestedNames", "expression": requested_names()},
                {
                    "name": "unknown",
                    "expression": "variables.requestedNames.filter(n, !(n in variables.knownProfiles))",
                },
            ],
            "validations": [
                {
                    "expression": "size(variables.unknown) == 0",
                    "messageExpression": "'unknown sidecar profile(s) ' + variables.unknown.join(', ') + "
                    f"' in {keys.INJECT} or the namespace\\'s profiles; available: ' + "
                    "variables.knownProfiles.join(', ')",
                    "reason": "Invalid",
                }
            ],
        },
    }
    binding_spec: dict[str, Any] = {
        "policyName": name,
        "validationActions": ["Deny"] if policy.strict else ["Warn"],
    }
    if binding_selector is not None:
        binding_spec["matchResources"] = {"namespaceSelector": dict(binding_selector)}
    binding = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": binding_spec,
    }
    return [unbound_objects(validating), unbound_objects(binding)]
