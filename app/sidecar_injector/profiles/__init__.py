"""The profile format: the model, its checks, parameters, templating, rendering, loading, profile resources, the catalog."""

from typing import Any


def __getattr__(name: str) -> Any:
    """Transitional: tests/test_chart.py imports these from the old flat ``sidecar_injector.profiles`` module.

    Resolved lazily so that importing a module of this package does not load the others.
    Delete once tests/test_chart.py imports from the modules (issue 17).
    """
    if name == "Profile":
        from sidecar_injector.profiles import model

        return getattr(model, name)
    if name in ("builtin_profiles", "load_directory"):
        from sidecar_injector.profiles import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
