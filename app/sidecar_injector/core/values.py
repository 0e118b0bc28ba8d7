"""A profile's values for one pod: annotations on the pod, else on its namespace, else defaults.

``<profile>.sidecar.io/<parameter>`` sets a declared parameter; the four resource keys
``<profile>.sidecar.io/{cpu,memory}-{request,limit}`` exist for every profile. Every value is
checked against its declaration before it can touch the pod; a key the profile does not
know gets a note with the closest name it does know. Pure: no I/O, no settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_injector.base.keys import value_key_prefix
from sidecar_injector.base.text import printable
from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.parameters import RESOURCE_KEYS, resource_problem


@dataclass(frozen=True)
class ValueResolution:
    """The values a profile gets in one pod, where each came from, and what was wrong."""

    #: parameter name -> the text it renders as
    values: dict[str, str] = field(default_factory=dict)
    #: resource key (cpu-limit...) -> quantity text
    resources: dict[str, str] = field(default_factory=dict)
    #: parameter or resource key -> "pod", "namespace" or "default"
    sources: dict[str, str] = field(default_factory=dict)
    #: why the profile cannot be injected with these values (a bad or missing value)
    problems: list[str] = field(default_factory=list)
    #: keys that name nothing the profile knows (not fatal)
    notes: list[str] = field(default_factory=list)


def resolve_values(
    profile: Profile, pod_annotations: Mapping[str, Any], namespace_annotations: Mapping[str, str]
) -> ValueResolution:
    """The values of ``profile`` for a pod with these annotations, in a namespace with those."""
    prefix = value_key_prefix(profile.name)
    if not _mentions(prefix, pod_annotations, namespace_annotations):
        # nothing set for this profile: its defaults, checked once per profile (the common case)
        return default_values(profile)
    return _resolve(profile, prefix, pod_annotations, namespace_annotations)


def default_values(profile: Profile) -> ValueResolution:
    """The resolution of a pod and namespace that set nothing for ``profile`` (cached per profile)."""
    cached = profile.derived.get("default-resolution")
    if cached is None:
        cached = profile.derived["default-resolution"] = _resolve(profile, value_key_prefix(profile.name), {}, {})
    assert isinstance(cached, ValueResolution)
    return cached


def _resolve(
    profile: Profile, prefix: str, pod_annotations: Mapping[str, Any], namespace_annotations: Mapping[str, str]
) -> ValueResolution:
    result = ValueResolution()
    for name, parameter in profile.parameters.items():
        found = _lookup(prefix + name, pod_annotations, namespace_annotations)
        if found is None:
            if parameter.default is None:
                summary = parameter.description.strip()
                what = summary.splitlines()[0] if summary else parameter.describe()
                result.problems.append(f"{prefix}{name} is required ({printable(what, 80)})")
                continue
            result.values[name] = parameter.default_text or parameter.default
            result.sources[name] = "default"
            continue
        raw, source = found
        text, expected = parameter.check(raw) if isinstance(raw, str) else (None, "a string")
        if text is None:
            result.problems.append(f"{prefix}{name}={printable(str(raw))} (on the {source}): expected {expected}")
            continue
        result.values[name] = text
        result.sources[name] = source
    for key in RESOURCE_KEYS:
        found = _lookup(prefix + key, pod_annotations, namespace_annotations)
        if found is None:
            continue
        raw, source = found
        amount, expected = resource_problem(raw) if isinstance(raw, str) else (None, "a quantity")
        if amount is None:
            result.problems.append(f"{prefix}{key}={printable(str(raw))} (on the {source}): expected {expected}")
            continue
        result.resources[key] = raw.strip()
        result.sources[key] = source
    if result.resources and not result.problems:
        result.problems.extend(profile.resource_problems(result.resources))
    known = [*profile.parameters, *RESOURCE_KEYS]
    unknown = [
        (key, source)
        for source, keys in (("pod", pod_annotations), ("namespace", namespace_annotations))
        for key in keys
        if isinstance(key, str) and key.startswith(prefix) and key[len(prefix) :] not in known
    ]
    for key, source in unknown[:MAX_UNKNOWN_NOTES]:  # a warning each, and no suggestion work for the rest
        close = difflib.get_close_matches(key[len(prefix) :], known, n=1)
        hint = f"did you mean {close[0]}?" if close else "it has " + (", ".join(known))
        result.notes.append(f"{printable(key, 100)} on the {source} is not a parameter of profile {profile.name}; {hint}")
    if len(unknown) > MAX_UNKNOWN_NOTES:
        more = len(unknown) - MAX_UNKNOWN_NOTES
        result.notes.append(f"and {more} more {prefix}* keys that are not parameters of profile {profile.name}")
    return result


#: unknown keys of one profile that get a warning each (with a suggestion); the rest are counted
MAX_UNKNOWN_NOTES = 5


def _mentions(prefix: str, *maps: Mapping[str, Any]) -> bool:
    return any(isinstance(key, str) and key.startswith(prefix) for annotations in maps for key in annotations)


def _lookup(key: str, pod: Mapping[str, Any], namespace: Mapping[str, str]) -> tuple[Any, str] | None:
    if key in pod:
        return pod[key], "pod"
    if key in namespace:
        return namespace[key], "namespace"
    return None
