"""CEL text for the policy compiler (:mod:`sidecar_injector.core.policy`).

Literals from a profile's parsed objects, templated strings as CEL string concatenations, and
the checks and renderings of a profile's values (``<profile>.sidecar.io/<param>`` annotations,
pod first, then the namespace, then the default) as the webhook's
:meth:`~sidecar_injector.profiles.parameters.Parameter.check` does them. Pure: text in, text out.

The Kubernetes CEL environment is assumed: the strings extension (``trim``, ``lowerAscii``,
``split``, ``replace``, ``join``), ``cel.bind``, optionals, ``lists.flatten``,
``transformList``, ``quantity`` and Go ``duration`` parsing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sidecar_injector.base.keys import value_key_prefix
from sidecar_injector.profiles.model import Profile
from sidecar_injector.profiles.parameters import RESOURCE_KEYS, Parameter
from sidecar_injector.profiles.templating import Ref, Slot

#: Python's integer and duration grammars (profiles/parameters.py), as RE2 for CEL's matches()
INTEGER_RE = "^[+-]?[0-9]{1,18}$"
DURATION_RE = "^[+-]?(?:(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$|^[+-]?0$"
#: longer text is refused before it is parsed (parameters._MAX_SCALAR_LENGTH)
MAX_SCALAR_LENGTH = 64

ANN = "variables.annotations"
NS_ANN = "variables.nsAnnotations"


def quote(text: str) -> str:
    """A CEL string literal (JSON's escapes are CEL's)."""
    return json.dumps(text, ensure_ascii=False)


def string_list(items: list[str] | tuple[str, ...]) -> str:
    """A CEL list of strings, written as Helm's ``toJson`` writes it (the chart sets ``defaultProfiles``)."""
    return "[" + ",".join(quote(i) for i in items) + "]"


def identifier(name: str) -> str:
    """A CEL identifier for a parameter or resource key (``interval-seconds`` -> ``interval_seconds``;
    parameter names have no ``_``, so this is one-to-one)."""
    return name.replace("-", "_")


def literal(value: Any, render: Callable[[tuple[str | int, ...], str], str | None], path: tuple[str | int, ...] = ()) -> str:
    """``value`` as a CEL literal. Map values are ``dyn`` (a container mixes strings, numbers and
    objects); ``render(path, text)`` gives the CEL of a templated string, None for a literal one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        rendered = render(path, value)
        return rendered if rendered is not None else quote(value)
    if isinstance(value, list):
        items = [literal(item, render, (*path, i)) for i, item in enumerate(value)]
        kinds = {type(item) for item in value}
        if len(kinds) > 1:
            items = [f"dyn({item})" for item in items]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        entries = [f"{quote(str(k))}: dyn({literal(v, render, (*path, k))})" for k, v in value.items()]
        return "{" + ", ".join(entries) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as CEL")


def slot_cel(slot: Slot, integers: frozenset[str], fact: Callable[[Ref], str]) -> str:
    """The CEL of one templated string: literal parts and values concatenated, ``$(`` escaped
    in substituted values where the kubelet expands; an integer field's single integer
    placeholder as an int."""
    parts = slot.parts
    first = parts[0]
    if slot.integer and len(parts) == 1 and isinstance(first, Ref) and first.kind == "param" and first.key in integers:
        return f"int(variables.text_{identifier(first.key)})"
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(quote(part))
            continue
        value = f"variables.text_{identifier(part.key)}" if part.kind == "param" else fact(part)
        pieces.append(f"{value}.replace('$(', '$$(')" if slot.expanded else value)
    return "(" + " + ".join(pieces) + ")" if len(pieces) > 1 else pieces[0]


def fact_cel(ref: Ref) -> str:
    """A pod fact (``{{ pod.* }}``) as the API server holds the pod at admission (core/decide.py _pod_facts)."""
    if ref.kind == "label":
        return f"({quote(ref.key)} in variables.labels ? variables.labels[{quote(ref.key)}] : '')"
    if ref.kind == "annotation":
        return f"({quote(ref.key)} in {ANN} ? {ANN}[{quote(ref.key)}] : '')"
    if ref.key == "namespace":
        return "namespaceObject.metadata.name"
    if ref.key == "serviceAccountName":
        return (
            "(has(object.spec.serviceAccountName) && object.spec.serviceAccountName != '' ? object.spec.serviceAccountName"
            " : has(object.spec.serviceAccount) && object.spec.serviceAccount != '' ? object.spec.serviceAccount"
            " : 'default')"
        )
    field = "kind" if ref.key == "ownerKind" else "name"
    # controller_reference: the controller's reference, else the first one
    return (
        "(has(object.metadata.ownerReferences) && size(object.metadata.ownerReferences) > 0 ? "
        "(object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller) ? "
        f"object.metadata.ownerReferences.filter(r, has(r.controller) && r.controller)[0].{field} : "
        f"object.metadata.ownerReferences[0].{field}) : '')"
    )


def raw_value(key: str) -> str:
    """The value set for ``key``: an optional string, the pod's annotation before the namespace's."""
    k = quote(key)
    return f"{k} in {ANN} ? optional.of({ANN}[{k}]) : ({k} in {NS_ANN} ? optional.of({NS_ANN}[{k}]) : optional.none())"


def _bounds(
    value: str, parameter: Parameter, convert: Callable[[str], str], at_least: Callable[[str, str], str]
) -> list[str]:
    """CEL: ``value`` within the parameter's bounds; ``at_least(a, b)`` says a ≥ b."""
    checks = []
    if parameter.minimum is not None:
        checks.append(at_least(value, convert(parameter.minimum)))
    if parameter.maximum is not None:
        checks.append(at_least(convert(parameter.maximum), value))
    return checks


def value_check(parameter: Parameter, v: str) -> str:
    """CEL: the annotation text ``v`` is a valid value of ``parameter`` (Parameter.check)."""
    if parameter.type == "string":
        checks = [f"size({v}) <= {parameter.max_length}"]
        if parameter.pattern is not None:
            checks.append(f"{v}.matches({quote('^(?:' + parameter.pattern + ')$')})")
        return " && ".join(checks)
    if parameter.type == "enum":
        return f"{v} in {string_list(parameter.enum)}"
    if parameter.type == "boolean":
        return f"{v}.trim().lowerAscii() in ['true', 'false']"
    if parameter.type == "integer":
        bounds = _bounds(f"int({v}.trim())", parameter, lambda t: str(int(t)), lambda a, b: f"{a} >= {b}")
        return " && ".join([f"size({v}) <= {MAX_SCALAR_LENGTH}", f"{v}.trim().matches({quote(INTEGER_RE)})", *bounds])
    if parameter.type == "duration":
        bounds = _bounds(
            f"duration({v}.trim())",
            parameter,
            lambda t: f"duration({quote(t.strip())})",
            lambda a, b: f"{a} >= {b}",
        )
        return " && ".join([f"size({v}) <= {MAX_SCALAR_LENGTH}", f"{v}.trim().matches({quote(DURATION_RE)})", *bounds])
    # quantity
    bounds = _bounds(
        f"quantity({v}.trim())",
        parameter,
        lambda t: f"quantity({quote(t.strip())})",
        lambda a, b: f"{a}.compareTo({b}) >= 0",
    )
    return " && ".join([f"size({v}) <= {MAX_SCALAR_LENGTH}", f"isQuantity({v}.trim())", *bounds])


def value_text(parameter: Parameter, v: str) -> str:
    """CEL: the text a valid value renders as (integers canonical, booleans lowercase, others trimmed)."""
    if parameter.type in ("string", "enum"):
        return v
    if parameter.type == "boolean":
        return f"{v}.trim().lowerAscii()"
    if parameter.type == "integer":
        return f"string(int({v}.trim()))"
    return f"{v}.trim()"


def expected(parameter: Parameter) -> str:
    """What a value must be, in words (for the validating policy's messages)."""
    if parameter.type == "string":
        text = f"a string of at most {parameter.max_length} characters"
        return text + (f" matching {parameter.pattern}" if parameter.pattern is not None else "")
    words = parameter.describe()
    if parameter.minimum is not None:
        words += f" of at least {parameter.minimum}"
    if parameter.maximum is not None:
        words += f" of at most {parameter.maximum}"
    return words


def value_variables(profile: Profile) -> list[dict[str, str]]:
    """Per parameter: ``raw_X`` (optional text), ``ok_X`` (set and valid, or defaulted), ``text_X``
    (what it renders as); per resource key: ``raw_cpu_request``..., ``ok_...``; then ``valuesOk``."""
    prefix = value_key_prefix(profile.name)
    out: list[dict[str, str]] = []
    oks = []
    for name, parameter in profile.parameters.items():
        ident = identifier(name)
        raw = f"variables.raw_{ident}"
        absent = "true" if parameter.default is not None else "false"
        default = quote(parameter.default_text or "") if parameter.default is not None else "''"
        out += [
            {"name": f"raw_{ident}", "expression": raw_value(prefix + name)},
            {
                "name": f"ok_{ident}",
                "expression": f"{raw}.hasValue() ? ({value_check(parameter, raw + '.value()')}) : {absent}",
            },
            {
                "name": f"text_{ident}",
                "expression": f"{raw}.hasValue() ? {value_text(parameter, raw + '.value()')} : {default}",
            },
        ]
        oks.append(f"variables.ok_{ident}")
    for key in RESOURCE_KEYS:
        ident = identifier(key)
        raw = f"variables.raw_{ident}"
        out += [
            {"name": f"raw_{ident}", "expression": raw_value(prefix + key)},
            {"name": f"ok_{ident}", "expression": f"!{raw}.hasValue() || {resource_check(profile, key, raw + '.value()')}"},
        ]
        oks.append(f"variables.ok_{ident}")
    out.append({"name": "resourcesOk", "expression": resource_pairs_check(profile)})
    oks.append("variables.resourcesOk")
    out.append({"name": "valuesOk", "expression": " && ".join(oks)})
    return out


def resource_check(profile: Profile, key: str, v: str) -> str:
    """CEL: a resource override is a quantity ≥ 0, within the profile's maxResources."""
    checks = [
        f"size({v}) <= {MAX_SCALAR_LENGTH}",
        f"isQuantity({v}.trim())",
        f"!quantity({v}.trim()).isLessThan(quantity('0'))",
    ]
    cap = profile.max_resources
    resource = RESOURCE_KEYS[key][1]
    if cap is not None and getattr(cap, resource) is not None:
        checks.append(f"quantity({v}.trim()).compareTo(quantity({quote(cap.value(resource))})) <= 0")
    return " && ".join(checks)


def resource_value(container: Mapping[str, Any], key: str) -> str | None:
    """CEL: the optional quantity text ``key`` (``cpu-limit``...) gives a container: the override, else its own."""
    section, resource = RESOURCE_KEYS[key]
    resources = container.get("resources")
    own = resources.get(section, {}).get(resource) if isinstance(resources, dict) else None
    raw = f"variables.raw_{identifier(key)}"
    if own is None:
        return f"({raw}.hasValue() ? optional.of({raw}.value().trim()) : optional.none())"
    return f"optional.of({raw}.hasValue() ? {raw}.value().trim() : {quote(str(own))})"


def resource_pairs_check(profile: Profile) -> str:
    """CEL: no long-running container ends up with a request above its limit for a resource a
    pod value sets (Profile.resource_problems)."""
    checks = []
    for container in profile.containers:
        for resource in ("cpu", "memory"):
            request, limit = resource_value(container, f"{resource}-request"), resource_value(container, f"{resource}-limit")
            keys = " || ".join(f"variables.raw_{resource}_{s}.hasValue()" for s in ("request", "limit"))
            checks.append(
                f"!({keys}) || cel.bind(rq, {request}, cel.bind(lm, {limit}, !rq.hasValue() || !lm.hasValue() || "
                "!isQuantity(rq.value()) || !isQuantity(lm.value()) || "
                "quantity(rq.value()).compareTo(quantity(lm.value())) <= 0))"
            )
    return " && ".join(checks) or "true"


def unbind(expression: str) -> str:
    """``cel.bind(v, init, body)`` rewritten as ``[init].map(v, body)[0]``: the admission policies'
    CEL environment has no ``cel.bind``, and a one-element comprehension binds the same way."""
    out: list[str] = []
    i = 0
    marker = "cel.bind("
    while True:
        start = expression.find(marker, i)
        if start < 0 or _in_string(expression, start):
            if start < 0:
                out.append(expression[i:])
                return "".join(out)
            out.append(expression[i : start + len(marker)])
            i = start + len(marker)
            continue
        args, end = _arguments(expression, start + len(marker))
        if len(args) != 3:
            raise ValueError(f"cel.bind takes 3 arguments: {expression[start:end][:80]}")
        var, init, body = (a.strip() for a in args)
        out.append(expression[i:start] + f"[{unbind(init)}].map({var}, {unbind(body)})[0]")
        i = end


def _unquoted(text: str, i: int = 0) -> Iterator[tuple[int, str]]:
    """Each (index, character) of the CEL ``text`` from ``i`` on that is code, not part of a
    string literal (its quotes and escapes included)."""
    quote_char = ""
    while i < len(text):
        ch = text[i]
        if quote_char:
            if ch == "\\":
                i += 2
                continue
            if ch == quote_char:
                quote_char = ""
        elif ch in "'\"":
            quote_char = ch
        else:
            yield i, ch
        i += 1


def _in_string(text: str, position: int) -> bool:
    """Whether ``position`` lies inside a string literal of the CEL ``text``."""
    return next((i for i, _ in _unquoted(text) if i >= position), None) != position


def _arguments(text: str, i: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments from ``i`` up to the matching ``)``, and the index after it."""
    args: list[str] = []
    depth = 0
    start = i
    for j, ch in _unquoted(text, i):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                args.append(text[start:j])
                return args, j + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:j])
            start = j + 1
    raise ValueError("unbalanced CEL expression")
