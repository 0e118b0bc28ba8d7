"""The profile format: the model, its checks, parameters, templating, rendering, loading, profile resources, the catalog."""
