"""The pure injection core: (pod, profiles, request context, policy) -> decision; the pod's shape, values, offline manifests."""
