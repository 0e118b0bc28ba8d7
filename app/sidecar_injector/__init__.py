"""sidecar-injector: a Kubernetes mutating admission webhook that injects sidecar profiles."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml's `version` is the one place the version is written; the installed
    # distribution's metadata carries it here (the chart's appVersion is checked against it)
    __version__ = version("sidecar-injector")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
