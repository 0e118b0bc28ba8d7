"""The core's answer (:class:`Decision`) and the ways of writing one: skip, deny, refuse, warn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from sidecar_injector.base.text import printable
from sidecar_injector.core.inputs import InjectionPolicy
from sidecar_injector.core.values import ValueResolution

DecisionOutcome = Literal["injected", "skipped", "denied"]

#: Every skip/deny reason the core can give (stable: logs and metrics use them).
REASONS = (
    "operation-not-create",
    "not-a-pod",
    "excluded-namespace",
    "not-requested",
    "opted-out",
    "no-known-profiles",
    "already-injected",
    "invalid-pod",
    "unsupported-os",
    "annotations-too-large",
    "pod-too-large",
    "injected",
    "unknown-profiles",
    "conflicts",
    "namespace-disabled",
    "namespace-unknown",
    "policy-refused",
    "invalid-values",
)

WARNING_PREFIX = "sidecar-injector: "
#: the API server may truncate longer warnings; each of ours is complete within this
MAX_WARNING_LENGTH = 256
MAX_LISTED = 5
#: the API server refuses a pod whose annotations (keys + values) exceed 256 KiB


@dataclass(frozen=True)
class Decision:
    """The core's answer. ``patch`` is empty unless ``outcome == "injected"``, or the pod is
    skipped and records why in ``sidecar.io/status`` (a patch of that annotation alone).

    The patch's values may share structure with the profiles: treat them as read-only
    (serialize them, or deep-copy before applying in place).
    """

    outcome: DecisionOutcome
    reason: str
    message: str
    requested: tuple[str, ...] = ()
    injected: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    patch: list[dict[str, Any]] = field(default_factory=list)
    #: each profile considered: its resolved values and where they came from (for `explain`)
    resolutions: Mapping[str, ValueResolution] = field(default_factory=dict)
    #: each requested profile that was not injected, and why (an injection records it in ``sidecar.io/status``)
    skipped: Mapping[str, str] = field(default_factory=dict)
    #: ``patch`` as JSON when the core already encoded it (to measure the patched pod): the
    #: answer reuses it instead of encoding the patch again
    patch_json: bytes | None = field(default=None, compare=False, repr=False)

    def encoded_patch(self) -> bytes:
        """``patch`` as JSON (encoded once)."""
        return self.patch_json if self.patch_json is not None else orjson.dumps(self.patch)

    @property
    def allowed(self) -> bool:
        return self.outcome != "denied"


def too_large(size: str | None, policy: InjectionPolicy, requested: tuple[str, ...], warnings: list[str]) -> Decision:
    """Skip (deny in strict mode) a pod that would be ``size`` once injected (None: more than the limit)."""
    limit = f"the {policy.max_object_bytes // 1024} KiB the API server stores"
    text = f"the injected pod would be {f'{size}, over {limit}' if size else f'over {limit}'}; nothing injected"
    return refuse("pod-too-large", text, policy, requested, warnings)


def refuse(reason: str, text: str, policy: InjectionPolicy, requested: tuple[str, ...], warnings: list[str]) -> Decision:
    """Nothing injected because of ``text``: denied in strict mode, else skipped with it as a warning."""
    if policy.strict:
        return deny(reason, text, requested, warnings)
    return skip(reason, text, requested=requested, warnings=[*warnings, warn(text)])


def skip(
    reason: str,
    message: str,
    *,
    requested: tuple[str, ...] = (),
    warnings: list[str] | None = None,
    resolutions: Mapping[str, ValueResolution] | None = None,
    skipped: Mapping[str, str] | None = None,
    patch: list[dict[str, Any]] | None = None,
    patch_json: bytes | None = None,
) -> Decision:
    """Nothing injected; ``patch`` (a skipped pod's status record) touches ``sidecar.io/status`` alone."""
    return Decision(
        "skipped",
        reason,
        message,
        requested=requested,
        warnings=tuple(warnings or ()),
        resolutions=resolutions or {},
        skipped=skipped or {},
        patch=patch or [],
        patch_json=patch_json if patch else None,
    )


def deny(
    reason: str,
    message: str,
    requested: tuple[str, ...],
    warnings: list[str],
    resolutions: Mapping[str, ValueResolution] | None = None,
) -> Decision:
    return Decision("denied", reason, message, requested=requested, warnings=tuple(warnings), resolutions=resolutions or {})


def listing(names: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(printable(n) for n in names[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def listing_of(problems: list[str], budget: int) -> str:
    """Problems joined for one warning: as many whole ones as fit ``budget`` characters, then how many more."""
    shown: list[str] = []
    used = 0
    for i, problem in enumerate(problems):
        tail = len(f"; and {len(problems) - i - 1} more") if i < len(problems) - 1 else 0
        if shown and used + 2 + len(problem) + tail > budget:
            return "; ".join(shown) + f"; and {len(problems) - i} more"
        shown.append(problem)
        used += (2 if used else 0) + len(problem)
    return "; ".join(shown)


def warn(text: str) -> str:
    """An admission warning: attributed to us and short enough to be shown whole."""
    line = WARNING_PREFIX + text
    return line if len(line) <= MAX_WARNING_LENGTH else line[: MAX_WARNING_LENGTH - 3] + "..."
