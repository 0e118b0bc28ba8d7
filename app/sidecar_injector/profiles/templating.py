"""Placeholders in profiles: ``{{ params.NAME }}`` and a few facts about the pod.

Substitution works on the profile's **parsed** objects, never on YAML text: each string
value of the containers, init containers, volumes, app mounts, app env and pod annotations
is scanned once, at load, into literal text and placeholders. Rendering replaces the
placeholders with values; a value is data, never structure and never a reference:

* where the Kubernetes field takes an integer (``containerPort``, a probe's ``port``), a
  string that is exactly one placeholder of an integer parameter renders as an integer;
  everywhere else values render as text;
* in the fields the kubelet expands (``command``, ``args``, ``env[].value``,
  ``volumeMounts[].subPathExpr``), ``$(`` in a substituted value becomes ``$$(``, so a pod
  cannot make a sidecar read another variable; literal template text keeps its ``$(VAR)``;
* substituted text is never scanned for placeholders again.

The placeholder grammar is closed: ``params.NAME``, ``pod.namespace``,
``pod.serviceAccountName``, ``pod.ownerKind``, ``pod.ownerName``, ``pod.labels['KEY']`` and
``pod.annotations['KEY']``. ``{{ ... }}`` that does not start with ``params.`` or ``pod.``
is left alone (Go templates in a sidecar's own configuration keep working).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_injector.profiles.object_schema import field_type

#: candidates: {{ params... }} / {{ pod... }}; the inside is parsed by _parse_ref
_CANDIDATE = re.compile(r"\{\{\s*((?:params|pod)\b[^}]*?)\s*\}\}")
_PARAM = re.compile(r"^params\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)$")
_FACT = re.compile(r"^pod\.(namespace|serviceAccountName|ownerKind|ownerName)$")
_MAP_FACT = re.compile(r"""^pod\.(labels|annotations)\[\s*(?:'([^']*)'|"([^"]*)")\s*\]$""")
#: the object type of each templated section of a profile (kube_types.json names)
SECTION_TYPES = {
    "containers": "V1Container",
    "initContainers": "V1Container",
    "volumes": "V1Volume",
    "appVolumeMounts": "V1VolumeMount",
    "appEnv": "V1EnvVar",
    "podAnnotations": None,
}
#: fields whose value the kubelet expands $(VAR) in: (section object type, path tail)
_EXPANDED_TAILS = (("command",), ("args",), ("env", "value"), ("volumeMounts", "subPathExpr"))
#: names identify what a profile adds (conflicts, status) and tie mounts to volumes: never templated
_NAME_PATHS = {
    *((section, ("name",)) for section in ("containers", "initContainers", "volumes", "appEnv", "appVolumeMounts")),
    *((section, ("volumeMounts", "name")) for section in ("containers", "initContainers")),
    *((section, ("env", "name")) for section in ("containers", "initContainers")),
}
GRAMMAR = (
    "params.NAME, pod.namespace, pod.serviceAccountName, pod.ownerKind, pod.ownerName, "
    "pod.labels['KEY'] or pod.annotations['KEY']"
)


@dataclass(frozen=True)
class Ref:
    """One placeholder: ``("param", name)``, ``("fact", name)``, ``("label", key)`` or ``("annotation", key)``."""

    kind: str
    key: str

    def __str__(self) -> str:
        if self.kind == "param":
            return f"params.{self.key}"
        if self.kind == "fact":
            return f"pod.{self.key}"
        return f"pod.{self.kind}s['{self.key}']"


@dataclass(frozen=True)
class PodFacts:
    """What a profile may read about the pod. Missing labels and annotations render as ""."""

    namespace: str = ""
    service_account_name: str = ""
    owner_kind: str = ""
    owner_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def value(self, ref: Ref) -> str:
        if ref.kind == "label":
            return self.labels.get(ref.key, "")
        if ref.kind == "annotation":
            return self.annotations.get(ref.key, "")
        return {
            "namespace": self.namespace,
            "serviceAccountName": self.service_account_name,
            "ownerKind": self.owner_kind,
            "ownerName": self.owner_name,
        }[ref.key]


def _parse_ref(inside: str) -> Ref | None:
    if m := _PARAM.match(inside):
        return Ref("param", m.group(1))
    if m := _FACT.match(inside):
        return Ref("fact", m.group(1))
    if m := _MAP_FACT.match(inside):
        return Ref(m.group(1)[:-1], m.group(2) if m.group(2) is not None else m.group(3))
    return None


def _segments(text: str) -> tuple[list[str | Ref], list[str]]:
    """``text`` as literal strings and placeholders, and the placeholders that do not parse."""
    parts: list[str | Ref] = []
    bad: list[str] = []
    end = 0
    for match in _CANDIDATE.finditer(text):
        ref = _parse_ref(match.group(1).strip())
        if ref is None:
            bad.append(match.group(0))
            continue
        if match.start() > end:
            parts.append(text[end : match.start()])
        parts.append(ref)
        end = match.end()
    if not parts:
        return [text], bad
    if end < len(text):
        parts.append(text[end:])
    return parts, bad


@dataclass(frozen=True)
class Slot:
    """A string value that holds placeholders, where it is and how it renders."""

    section: str
    path: tuple[str | int, ...]  # from the section's list (or map) down to the string
    parts: tuple[str | Ref, ...]
    kind: str  # the field's Kubernetes type (object_schema.field_type): "int", "object" (int-or-string), "str"...
    expanded: bool  # the kubelet expands $(VAR) here: substituted values get $( escaped

    @property
    def integer(self) -> bool:
        """The field takes an integer: a single integer placeholder renders as one."""
        return self.kind in ("int", "object")

    @property
    def where(self) -> str:
        """``containers[0].ports[0].containerPort``: the field, for messages."""
        return _where(self.section, self.path)


@dataclass(frozen=True)
class Templates:
    """Every placeholder of a profile, found once at load."""

    slots: tuple[Slot, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def refs(self) -> frozenset[Ref]:
        return frozenset(part for slot in self.slots for part in slot.parts if isinstance(part, Ref))

    def render(
        self, sections: Mapping[str, Any], values: Mapping[str, str], facts: PodFacts, integers: frozenset[str]
    ) -> dict[str, Any]:
        """A copy of ``sections`` with every placeholder replaced. ``integers`` names the integer parameters."""
        out = {name: copy.deepcopy(sections[name]) for name in {slot.section for slot in self.slots}}
        for slot in self.slots:
            node: Any = out[slot.section]
            for key in slot.path[:-1]:
                node = node[key]
            node[slot.path[-1]] = _render_slot(slot, values, facts, integers)
        return {**sections, **out}


def _render_slot(slot: Slot, values: Mapping[str, str], facts: PodFacts, integers: frozenset[str]) -> Any:
    parts = slot.parts
    first = parts[0]
    if slot.integer and len(parts) == 1 and isinstance(first, Ref) and first.kind == "param" and first.key in integers:
        return int(values[first.key])
    text = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
            continue
        value = values[part.key] if part.kind == "param" else facts.value(part)
        text.append(value.replace("$(", "$$(") if slot.expanded else value)
    return "".join(text)


def find_templates(sections: Mapping[str, Any]) -> Templates:
    """Scan the profile's sections for placeholders (and report the ones that do not parse)."""
    slots: list[Slot] = []
    problems: list[str] = []

    def walk(node: Any, section: str, path: tuple[str | int, ...], keys: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, section, (*path, key), (*keys, str(key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, section, (*path, i), keys)
        elif isinstance(node, str) and "{{" in node:
            parts, bad = _segments(node)
            where = _where(section, path)
            problems.extend(f"{where}: unknown placeholder {b}: use {GRAMMAR}" for b in bad)
            if not any(isinstance(p, Ref) for p in parts):
                return
            if (section, keys) in _NAME_PATHS:
                problems.append(f"{where}: names cannot hold placeholders (they identify what the profile adds)")
                return
            root = SECTION_TYPES[section]
            kind = field_type(root, keys) if root is not None else "str"
            expanded = root == "V1Container" and any(keys[-len(tail) :] == tail for tail in _EXPANDED_TAILS)
            expanded = expanded or (section == "appEnv" and keys == ("value",))
            expanded = expanded or (section == "appVolumeMounts" and keys == ("subPathExpr",))
            slots.append(Slot(section, path, tuple(parts), kind or "str", expanded))

    for section in SECTION_TYPES:
        value = sections.get(section)
        if isinstance(value, (list, dict)):
            walk(value, section, (), ())
    return Templates(tuple(slots), tuple(problems))


def _where(section: str, path: tuple[str | int, ...]) -> str:
    text = section
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
