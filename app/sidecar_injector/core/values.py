"""A profile's values for one pod: annotations on the pod, else on its namespace, else defaults.

``<profile>.sidecar.io/<parameter>`` sets a declared parameter; the four resource keys
``<profile>.sidecar.io/{cpu,memory}-{request,limit}`` exist for every profile. Every value is
checked against its declaration before it can touch the pod; a key the profile does not
know gets a note with the closest name it does know. Pure: no I/O, no settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_injector.base.keys import INJECT, VALUE_DOMAIN, value_key_prefix
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
                result.problems.append(
                    f"{prefix}{name} is required ({_summary(parameter.description) or parameter.describe()})"
                )
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
_VALUE_INFIX = "." + VALUE_DOMAIN
#: the longest parameter description quoted in a message
MAX_SUMMARY = 100


def _summary(description: str) -> str:
    """A parameter's description for a message: its first line, up to its first "; ", whole words
    within :data:`MAX_SUMMARY` characters and never cut inside parentheses."""
    text = printable(description.strip().splitlines()[0] if description.strip() else "", 10 * MAX_SUMMARY)
    text = text.split("; ")[0].rstrip(" .;")
    if len(text) <= MAX_SUMMARY:
        return text
    cut = text[:MAX_SUMMARY].rsplit(" ", 1)[0]
    # drop an opened parenthesis the cut left unclosed
    while cut.count("(") > cut.count(")"):
        cut = cut[: cut.rindex("(")].rstrip()
    return cut + "..."


def stray_value_keys(
    pod_annotations: Mapping[str, Any],
    requested: Collection[str],
    profiles: Mapping[str, Profile],
) -> list[str]:
    """Notes for the pod's ``<profile>.sidecar.io/`` keys that reach no requested profile: a key of
    a profile the pod does not ask for, and a prefix close to a profile's name (with the key it
    likely means); at most :data:`MAX_UNKNOWN_NOTES` of them, then how many more. Namespace
    annotations are defaults for any pod and are not judged here."""
    notes: list[str] = []
    stray = 0
    compared = 0  # names looked up with difflib: bounded, whatever the pod holds
    for key in pod_annotations:
        if not isinstance(key, str) or _VALUE_INFIX not in key:
            continue
        name, _, rest = key.partition(_VALUE_INFIX)
        if not name or "/" in name or "." in name or name in requested:  # profile names are DNS labels
            continue
        if name in profiles:
            note = f"{printable(key, 100)} on the pod: profile {name} is not requested by {INJECT}; ignored"
        else:
            if compared >= 4 * MAX_UNKNOWN_NOTES:
                continue
            compared += 1
            close = difflib.get_close_matches(name, [*requested, *profiles], n=1, cutoff=0.75)
            if not close:
                continue
            note = (
                f"{printable(key, 100)} on the pod names no profile: did you mean "
                f"{value_key_prefix(close[0])}{printable(rest, 60)}?"
            )
        stray += 1
        if stray <= MAX_UNKNOWN_NOTES:
            notes.append(note)
    if stray > MAX_UNKNOWN_NOTES:
        notes.append(f"and {stray - MAX_UNKNOWN_NOTES} more <profile>.sidecar.io/ keys that reach no requested profile")
    return notes


def _mentions(prefix: str, *maps: Mapping[str, Any]) -> bool:
    return any(isinstance(key, str) and key.startswith(prefix) for annotations in maps for key in annotations)


def _lookup(key: str, pod: Mapping[str, Any], namespace: Mapping[str, str]) -> tuple[Any, str] | None:
    if key in pod:
        return pod[key], "pod"
    if key in namespace:
        return namespace[key], "namespace"
    return None
