"""The pure injection core: (pod, profiles, request context, policy) -> decision.

Also the pod's shape, the profiles' values for a pod, offline manifests and stale-pod analysis.
"""
