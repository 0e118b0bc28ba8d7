"""The annotation and label keys that make up the public contract (design, section 2)."""

#: pod annotation: comma list of profiles, or "false" to opt out
INJECT = "sidecar.io/inject"
#: pod annotation written by the webhook: JSON record of what was injected
STATUS = "sidecar.io/status"
#: pod annotation: "true"/"false" overrides the native-sidecar choice
NATIVE_SIDECARS = "sidecar.io/native-sidecars"
