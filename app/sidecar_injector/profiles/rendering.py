"""Rendering support for :meth:`Profile.render <sidecar_injector.profiles.model.Profile.render>`: the per-profile
cache of renderings, resource overrides, and the startupProbe of a native sidecar that waits to be ready."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from sidecar_injector.profiles.parameters import RESOURCE_KEYS

#: renderings kept per profile (the most recently used)
RENDER_CACHE_SIZE = 256

Rendered = TypeVar("Rendered")


class RenderCache(Generic[Rendered]):
    """A bounded LRU of renderings, safe to share between worker threads."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Any, Rendered] = OrderedDict()
        self.lock = threading.Lock()


def with_resources(container: dict[str, Any], resources: Mapping[str, str]) -> dict[str, Any]:
    """``container`` with its resources overridden by ``resources`` (``cpu``/``memory`` request and limit keys)."""
    found = container.get("resources")
    old: dict[str, Any] = found if isinstance(found, dict) else {}
    merged = {section: dict(old.get(section) or {}) for section in ("requests", "limits")}
    for key, text in resources.items():
        section, resource = RESOURCE_KEYS[key]
        merged[section][resource] = text
    return {**container, "resources": {**old, **{k: v for k, v in merged.items() if v}}}


def startup_probe(readiness: dict[str, Any]) -> dict[str, Any]:
    """A startupProbe with the readiness check's handler, polled every second for up to two minutes."""
    handler = {k: v for k, v in readiness.items() if k in ("exec", "httpGet", "tcpSocket", "grpc")}
    return {
        **handler,
        "timeoutSeconds": readiness.get("timeoutSeconds", 1),
        "periodSeconds": 1,
        "failureThreshold": 120,
        "successThreshold": 1,
    }
