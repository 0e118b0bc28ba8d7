"""Kubernetes resource quantities (``100m``, ``1.5Gi``, ``2e3``) as exact decimals.

The grammar is the API server's (``k8s.io/apimachinery/pkg/api/resource``): a signed
decimal number, then an optional binary suffix (Ki … Ei), decimal SI suffix (n, u, m, "",
k, M, G, T, P, E) or decimal exponent (e3, E-2). Values are compared as
:class:`decimal.Decimal`, so ``1Gi`` > ``1G`` and ``0.1`` == ``100m`` exactly.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_MULTIPLIERS = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
#: longer than any quantity a person writes; bounds the work done on hostile input
_MAX_LENGTH = 64


def parse_quantity(value: object) -> Decimal:
    """The quantity's exact value; raises ValueError on anything the API server would refuse."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("a quantity is a string such as 100m, 256Mi or 1.5")
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _MAX_LENGTH or not (match := _QUANTITY.match(text.strip())):
        raise ValueError(f"{text[:_MAX_LENGTH]!r} is not a Kubernetes quantity (e.g. 100m, 256Mi, 1.5)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            exponent = int(suffix[1:])
            if abs(exponent) > 30:
                raise ValueError(f"{text!r}: exponent out of range")
            return Decimal(number).scaleb(exponent)
        return Decimal(number) * _MULTIPLIERS[suffix]
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from None


def format_quantity(value: Decimal, resource: str) -> str:
    """A readable form for messages: cpu in cores or millicores, memory in Mi/Gi or bytes."""
    if resource == "cpu":
        milli = value * 1000
        return f"{milli.normalize():f}m" if milli != milli.to_integral_value() or value < 1 else f"{value.normalize():f}"
    for suffix in ("Gi", "Mi", "Ki"):
        scaled = value / _MULTIPLIERS[suffix]
        if scaled >= 1 and scaled == scaled.to_integral_value():
            return f"{scaled.normalize():f}{suffix}"
    return f"{value.normalize():f}"
