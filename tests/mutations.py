"""Test helper: walk a JSON-like tree and make copies with one node replaced."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (tuple of keys and indexes) into nested dicts and lists, the root first."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def replaced(node: Any, path: tuple, value: Any) -> Any:
    """A copy of ``node`` with the node at ``path`` replaced; only the nodes on the path are copied."""
    if not path:
        return value
    copy_ = list(node) if isinstance(node, list) else dict(node)
    copy_[path[0]] = replaced(node[path[0]], path[1:], value)
    return copy_
