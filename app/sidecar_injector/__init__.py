"""sidecar-injector: a Kubernetes mutating admission webhook that injects sidecar profiles."""

__version__ = "0.1.0"
