"""``decide()`` remembered for the pods of one template.

Most pods are created by a controller from a template: the replicas of a ReplicaSet, the pods
of a Job reach the webhook as the same object (``generateName``, no name yet, the same labels,
owner and spec), so a scale-up or a rollout asks the same question again and again. The
decision is a pure function of (pod, request context, profiles, policy), so the answer for one
replica is the answer for the next: :class:`DecisionMemo` keeps the last few decisions and
answers a repeat without deciding again.

Exact, not approximate:
- the key is the pod's JSON bytes and every field of the :class:`RequestContext` but the
  namespace's facts; the namespace's facts, the profiles and the policy are compared by
  identity, and each is replaced as a whole when it changes (the informer's facts, the
  profile views built per change, the policy built once), so a changed namespace label, a
  reloaded profile or new settings is a miss and a fresh decision;
- a hit returns the same :class:`Decision` object, which is immutable by contract (its
  patch is serialized, never applied in place).

Bounded: pods over ``max_pod_bytes`` of JSON are never remembered, at most ``capacity``
entries are kept (the oldest goes first), and a pod the encoder cannot serialize is just
decided. Not thread-safe: one memo per thread (the webhook uses it on the event loop only).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any, NamedTuple

import orjson

from sidecar_injector.core.decide import decide
from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.profiles.loading import ProfileSet

Decide = Callable[[dict[str, Any], RequestContext, ProfileSet, InjectionPolicy], Decision]

#: the context's fields in the key (all but the namespace's facts, compared by identity instead)
_context_key = operator.attrgetter(*(f.name for f in fields(RequestContext) if f.name != "namespace_facts"))


class _Entry(NamedTuple):
    """A decision and what it was made with besides the key (compared by identity)."""

    facts: NamespaceFacts | None
    profiles: ProfileSet
    policy: InjectionPolicy
    decision: Decision


class DecisionMemo:
    """``decide()`` with the last ``capacity`` decisions remembered (see the module's docstring)."""

    def __init__(self, capacity: int = 128, max_pod_bytes: int = 16 * 1024):
        self.capacity = capacity
        self.max_pod_bytes = max_pod_bytes
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        #: decisions answered from memory, and decided afresh (for tests and the benchmark)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def decide(
        self,
        pod: dict[str, Any],
        context: RequestContext,
        profiles: ProfileSet,
        policy: InjectionPolicy,
        *,
        decider: Decide = decide,
    ) -> Decision:
        """The remembered decision for these inputs, else ``decider``'s (remembered when the pod fits)."""
        try:
            pod_json = orjson.dumps(pod)
        except (TypeError, orjson.JSONEncodeError):  # not plain JSON data: nothing to key on
            self.misses += 1
            return decider(pod, context, profiles, policy)
        if len(pod_json) > self.max_pod_bytes:
            self.misses += 1
            return decider(pod, context, profiles, policy)
        key = (pod_json, _context_key(context))
        facts = context.namespace_facts
        entry = self._entries.get(key)
        if entry is not None and entry.facts is facts and entry.profiles is profiles and entry.policy is policy:
            self.hits += 1
            return entry.decision
        self.misses += 1
        decision = decider(pod, context, profiles, policy)
        if entry is None and len(self._entries) >= self.capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(facts, profiles, policy, decision)
        return decision
