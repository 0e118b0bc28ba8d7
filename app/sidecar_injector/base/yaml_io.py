"""YAML in and out, with LibYAML's C loader and dumper when PyYAML was built with them.

The C classes read and write the same YAML as the pure-Python ones (same resolver, same
representer, same emitter settings; tests/test_cli.py checks the output is byte for byte
the same) and are about ten times faster: offline ``inject`` of a many-document file was
spending most of its time in the Python emitter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

try:
    Loader: Any = yaml.CSafeLoader
    Dumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - PyYAML without LibYAML
    Loader = yaml.SafeLoader
    Dumper = yaml.SafeDumper


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` (safe types only), empty documents included as None."""
    return list(yaml.load_all(text, Loader=Loader))


def dump_all(documents: Iterable[Any]) -> str:
    """Block-style YAML, keys in their given order (kubectl-like output)."""
    return yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, default_flow_style=False)


def dump(document: Any) -> str:
    return dump_all([document])
