"""The annotation and label keys that make up the public contract (docs/injection.md, "Annotations")."""

#: pod annotation: comma list of profiles, or "false" to opt out
INJECT = "sidecar.io/inject"
#: pod annotation written by the webhook: JSON record of what was injected
STATUS = "sidecar.io/status"
#: pod annotation: "true"/"false" overrides the native-sidecar choice
NATIVE_SIDECARS = "sidecar.io/native-sidecars"
#: namespace label: "enabled" = automatic injection of the namespace's default profiles,
#: "disabled" = never inject here (the chart's namespaceSelector also excludes it)
NAMESPACE_INJECT = "sidecar.io/inject"
NAMESPACE_ENABLED = "enabled"
NAMESPACE_DISABLED = "disabled"
#: namespace annotation: the profiles automatic injection uses in this namespace
NAMESPACE_PROFILES = "sidecar.io/profiles"

#: pod and namespace annotations ``<profile>.sidecar.io/<parameter>``: a profile's values
#: (docs/injection.md, "Per-workload values")
VALUE_DOMAIN = "sidecar.io/"


def value_key_prefix(profile_name: str) -> str:
    """``logging.sidecar.io/``: what every value key of the profile starts with."""
    return f"{profile_name}.{VALUE_DOMAIN}"
