"""The Kubernetes API edge: the client, informers, namespaces, profile sources and status, Events, rollout."""
