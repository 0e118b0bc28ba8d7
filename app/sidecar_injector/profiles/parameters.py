"""Typed profile parameters: what a pod (or its namespace) may set, declared by the profile author.

A profile declares each parameter with a type and optional bounds::

    parameters:
      repo:
        type: string
        pattern: '^(https|ssh)://\\S+$'   # full match
        maxLength: 2048                  # strings only (default 1024)
      period:
        type: duration                   # Go syntax: 500ms, 30s, 5m, 1h30m
        default: 60s
        minimum: 5s

A value always arrives as text (an annotation value); :meth:`Parameter.check` validates it
and returns the text it renders as (integers canonical, booleans lowercase), or says what
was expected. Everything here is pure: no I/O, no settings.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sidecar_injector.base.quantity import parse_quantity

ParameterType = Literal["string", "integer", "boolean", "duration", "quantity", "enum"]

#: a parameter name: what follows ``<profile>.sidecar.io/`` in an annotation key
PARAMETER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_PARAMETER_NAME = 40
#: the default maxLength of a string parameter
DEFAULT_MAX_LENGTH = 1024
#: any value that is not a string is short; longer text is refused before it is parsed
_MAX_SCALAR_LENGTH = 64
#: the resource keys every profile has without declaring them (they set its sidecars' resources)
RESOURCE_KEYS = {
    "cpu-request": ("requests", "cpu"),
    "cpu-limit": ("limits", "cpu"),
    "memory-request": ("requests", "memory"),
    "memory-limit": ("limits", "memory"),
}

_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_DURATION = re.compile(r"^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$|^[+-]?0$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_SECONDS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}


def parse_duration(text: str) -> Decimal:
    """A Go duration (``1h30m``, ``500ms``, ``0``) in seconds; raises ValueError."""
    if len(text) > _MAX_SCALAR_LENGTH or not _DURATION.match(text):
        raise ValueError("a duration such as 500ms, 30s, 5m or 1h30m")
    sign = -1 if text.startswith("-") else 1
    return sign * sum((Decimal(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text)), Decimal(0))


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """A parameter's pattern, compiled by RE2: linear time whatever value a pod sends, and the
    syntax Kubernetes itself uses for OpenAPI patterns. Raises ValueError if RE2 refuses it."""
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(str(exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc)) from None


def _as_text(value: object) -> str:
    """A YAML scalar (``8080``, ``true``, ``60s``) as the text an annotation would carry."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"expected a scalar, got {type(value).__name__}")


class Parameter(BaseModel):
    """One declared parameter. ``default`` absent means required."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    description: str = ""
    type: ParameterType = "string"
    default: str | None = None
    pattern: str | None = None
    max_length: Annotated[int, Field(ge=1, le=65536)] = DEFAULT_MAX_LENGTH
    minimum: str | None = None
    maximum: str | None = None
    enum: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_accidental_booleans(cls, data: object) -> object:
        # YAML 1.1 reads a bare on/off/yes/no as a boolean: in an enum, or as the default of a
        # text parameter, that is never what the author meant (`off` would become "false")
        if isinstance(data, dict) and data.get("type", "string") in ("string", "enum"):
            enum = data.get("enum")
            values = [data.get("default"), *(enum if isinstance(enum, list) else [])]
            if any(isinstance(v, bool) for v in values):
                raise ValueError("a value was read as a boolean (YAML reads bare on/off/yes/no/true/false so): quote it")
        return data

    # the JSON schema (and so the CRDs' schema) says what is accepted, not just what is kept
    @field_validator("default", "minimum", "maximum", mode="before", json_schema_input_type=str | int | float | bool | None)
    @classmethod
    def _scalar_as_text(cls, value: object) -> object:
        return None if value is None else _as_text(value)

    @field_validator("enum", mode="before", json_schema_input_type=list[str | int | float | bool])
    @classmethod
    def _enum_as_text(cls, value: object) -> object:
        return [_as_text(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _rules_fit_the_type(self) -> Parameter:
        errors: list[str] = []
        if self.type != "string":
            # (a dump of the model carries maxLength's default: only a different value is a mistake)
            if self.pattern is not None:
                errors.append("pattern: only string parameters take it")
            if self.max_length != DEFAULT_MAX_LENGTH:
                errors.append("maxLength: only string parameters take it")
        if self.type not in ("integer", "duration", "quantity"):
            errors += [
                f"{bound}: only integer, duration and quantity parameters take it"
                for bound in ("minimum", "maximum")
                if getattr(self, bound) is not None
            ]
        if self.type == "enum" and not self.enum:
            errors.append("enum: an enum parameter lists its values")
        if self.type != "enum" and self.enum:
            errors.append("enum: only enum parameters take it")
        if self.pattern is not None:
            try:
                compile_pattern(self.pattern)
            except ValueError as exc:
                errors.append(f"pattern: not a valid (RE2) regular expression: {exc}")
        for bound in ("minimum", "maximum"):
            text = getattr(self, bound)
            if text is not None and self.type in ("integer", "duration", "quantity"):
                try:
                    self._number(text)
                except ValueError as exc:
                    errors.append(f"{bound}: {text!r} is not {exc}")
        bounded = self.minimum is not None and self.maximum is not None
        if not errors and bounded and self._number(self.minimum or "") > self._number(self.maximum or ""):
            errors.append("minimum is greater than maximum")
        if not errors and self.default is not None:
            _rendered, problem = self.check(self.default)
            if problem:
                errors.append(f"default: {self.default!r} fails its own rules: expected {problem}")
        if errors:
            raise ValueError("\n".join(errors))
        return self

    @property
    def required(self) -> bool:
        return self.default is None

    @cached_property
    def default_text(self) -> str | None:
        """The default as it renders (None when required); it passed ``check`` at load."""
        return None if self.default is None else self.check(self.default)[0]

    def _number(self, text: str) -> Decimal:
        if self.type == "integer":
            if len(text) > _MAX_SCALAR_LENGTH or not _INTEGER.match(text.strip()):
                raise ValueError("an integer")
            return Decimal(int(text))
        if self.type == "duration":
            return parse_duration(text.strip())
        try:
            return parse_quantity(text)
        except ValueError:
            raise ValueError("a quantity such as 100m, 256Mi or 1.5") from None

    def check(self, value: str) -> tuple[str, None] | tuple[None, str]:
        """``(text to render, None)`` for a valid value, else ``(None, what was expected)``."""
        if self.type == "string":
            if len(value) > self.max_length:
                return None, f"at most {self.max_length} characters"
            if self.pattern is not None and not compile_pattern(self.pattern).fullmatch(value):
                return None, f"a string matching {self.pattern}"
            return value, None
        if self.type == "enum":
            return (value, None) if value in self.enum else (None, "one of " + ", ".join(self.enum))
        if self.type == "boolean":
            lowered = value.strip().lower()
            return (lowered, None) if lowered in ("true", "false") else (None, "true or false")
        try:
            number = self._number(value)
        except ValueError as exc:
            return None, str(exc)
        if self.minimum is not None and number < self._number(self.minimum):
            return None, f"{self.describe()} of at least {self.minimum}"
        if self.maximum is not None and number > self._number(self.maximum):
            return None, f"{self.describe()} of at most {self.maximum}"
        return (str(int(number)) if self.type == "integer" else value.strip()), None

    def describe(self) -> str:
        """The type in words, with bounds: for `profiles show`, `explain` and messages."""
        if self.type == "enum":
            return "one of " + ", ".join(self.enum)
        return {
            "integer": "an integer",
            "boolean": "true or false",
            "duration": "a duration",
            "quantity": "a quantity",
            "string": "a string",
        }[self.type]


def resource_problem(value: str) -> tuple[Decimal, None] | tuple[None, str]:
    """A resource override's value as a quantity, or what was expected (parse_quantity caps the length)."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return None, "a Kubernetes quantity such as 100m or 256Mi"
    if amount < 0:
        return None, "a quantity of at least 0"
    return amount, None


def probe_value(parameter: Parameter) -> str:
    """A value of the parameter's type, to render a profile at load without pod values."""
    if parameter.default is not None:
        return parameter.default
    if parameter.type == "enum":
        return parameter.enum[0]
    if parameter.type == "boolean":
        return "true"
    if parameter.type in ("integer", "duration", "quantity"):
        return parameter.minimum or {"integer": "1", "duration": "1s", "quantity": "1"}[parameter.type]
    return "x"


def parameter_names_problem(names: Any) -> list[str]:
    """Problems with the declared parameter names (syntax, length, the reserved resource keys)."""
    problems = []
    for name in names:
        if not isinstance(name, str) or len(name) > MAX_PARAMETER_NAME or not PARAMETER_NAME.match(name):
            problems.append(
                f"parameters.{name}: a parameter name is lowercase letters, digits and '-', "
                f"starting and ending with a letter or digit, at most {MAX_PARAMETER_NAME} characters"
            )
        elif name in RESOURCE_KEYS:
            problems.append(f"parameters.{name}: reserved: every profile has the {name} key already")
    return problems
