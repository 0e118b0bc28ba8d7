"""The values the built-in profiles cannot be injected without.

git-sync's ``repo`` has no default (a pod names the repository it wants): pods in the tests
that may ask for git-sync carry this annotation. It names nothing for any other profile.
"""

REQUIRED_VALUES = {"git-sync.sidecar.io/repo": "https://github.com/kubernetes/git-sync"}


def values_for(inject: str | None) -> dict[str, str]:
    """:data:`REQUIRED_VALUES` of the profiles ``inject`` (a ``sidecar.io/inject`` value) names, and
    none of the others: a value for a profile the pod does not request is warned about."""
    names = {part.strip().lower() for part in (inject or "").split(",")}
    return {key: value for key, value in REQUIRED_VALUES.items() if key.split(".sidecar.io/")[0] in names}
