"""The values the built-in profiles cannot be injected without.

git-sync's ``repo`` has no default (a pod names the repository it wants): pods in the tests
that may ask for git-sync carry this annotation. It names nothing for any other profile.
"""

REQUIRED_VALUES = {"git-sync.sidecar.io/repo": "https://github.com/kubernetes/git-sync"}
