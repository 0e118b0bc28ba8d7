"""Field-by-field checks of Kubernetes objects inside profiles.

Profiles carry Kubernetes ``Container``, ``Volume``, ``VolumeMount`` and ``EnvVar``
objects as plain dicts (so every field Kubernetes knows passes through untouched).
To still reject typos at load time — ``imagePulPolicy``, ``volumeMount`` — we walk the
dict against the object models of the official ``kubernetes`` client, which mirror the
API's OpenAPI schema (field names, nesting and scalar types). The models' field tables are
extracted once into ``kube_types.json`` (scripts/gen_kube_types.py; a test keeps it equal to
the installed client), so loading profiles never imports the client (half a second).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")

# Fields the API server decodes as resource.Quantity: a JSON number is accepted too.
_QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "sizeLimit"),
}


@cache
def _types() -> dict[str, dict[str, str]]:
    """The field table (kube_types.json, generated from the client's models by scripts/gen_kube_types.py)."""
    text = (resources.files("sidecar_injector.profiles") / "kube_types.json").read_text(encoding="utf-8")
    types: dict[str, dict[str, str]] = json.loads(text)["types"]
    return types


def _model_fields(type_name: str) -> dict[str, str] | None:
    """``{json field: type name}`` for a Kubernetes model such as ``V1Container``, or None if unknown."""
    return _types().get(type_name)


def field_type(type_name: str, keys: tuple[str, ...]) -> str | None:
    """The client type name of the field at ``keys`` (dict keys; list levels are skipped) below
    ``type_name``: ``int``, ``str``, ``object`` (int-or-string), a model name... None if unknown."""
    current: str | None = type_name
    for key in keys:
        while current is not None and (m := _LIST.match(current) or _DICT.match(current)):
            current = m.group(1)
        fields = _model_fields(current) if current is not None else None
        if fields is None:
            return None
        current = fields.get(key)
    while current is not None and (m := _LIST.match(current)):
        current = m.group(1)
    return current


def check_object(value: Any, type_name: str, path: str) -> list[str]:
    """Errors (``path: message``) found walking ``value`` as Kubernetes type ``type_name``.

    ``type_name`` is a client model name such as ``V1Container``.
    """
    errors: list[str] = []
    _walk(value, type_name, path, errors, quantity=False)
    return errors


def _type_label(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def _walk(value: Any, type_name: str, path: str, errors: list[str], *, quantity: bool) -> None:
    if value is None:
        return  # null means "unset" to the API server
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {_type_label(value)}")
            return
        for i, item in enumerate(value):
            _walk(item, m.group(1), f"{path}[{i}]", errors, quantity=quantity)
        return
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {_type_label(value)}")
            return
        for key, item in value.items():
            _walk(item, m.group(1), f"{path}.{key}", errors, quantity=quantity)
        return
    if type_name == "str":
        ok = isinstance(value, str) or (quantity and isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected a string, got {_type_label(value)}")
        return
    if type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {_type_label(value)}")
        return
    if type_name == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {_type_label(value)}")
        return
    if type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {_type_label(value)}")
        return
    if type_name in ("object", "datetime", "bytes"):
        return  # IntOrString and friends: the schema allows several shapes
    fields = _model_fields(type_name)
    if fields is None:
        return  # a type this client does not know: do not guess
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a mapping, got {_type_label(value)}")
        return
    for key, item in value.items():
        field_type = fields.get(key)
        if field_type is None:
            errors.append(f"{path}.{key}: unknown field")
            continue
        _walk(
            item,
            field_type,
            f"{path}.{key}",
            errors,
            quantity=(type_name, key) in _QUANTITY_FIELDS,
        )
