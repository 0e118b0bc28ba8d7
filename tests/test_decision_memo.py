"""DecisionMemo: decide() remembered for the replicas of one template, exactly.

A remembered decision is only ever returned for the same pod JSON, the same request context
and the same namespace facts, profiles and policy objects; anything else decides afresh.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.core.memo import DecisionMemo
from sidecar_injector.profiles.loading import ProfileSet, builtin_profiles, parse_profiles

PROFILES = builtin_profiles()
POLICY = InjectionPolicy()


def replica(inject: str = "logging", **annotations: str) -> dict[str, Any]:
    """A pod as the ReplicaSet controller sends it: generateName, no name, owner set."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d4b9c8f6d-",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d"},
            "annotations": {"sidecar.io/inject": inject, **annotations},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6d", "uid": "u1", "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}]},
    }


def context(**changes: Any) -> RequestContext:
    return dataclasses.replace(RequestContext(namespace="shop"), **changes)


def test_a_replica_of_the_same_template_gets_the_remembered_decision() -> None:
    memo = DecisionMemo()
    first = memo.decide(replica(), context(), PROFILES, POLICY)
    again = memo.decide(replica(), context(), PROFILES, POLICY)
    assert first.outcome == "injected"
    assert again is first
    assert (memo.hits, memo.misses) == (1, 1)


@pytest.mark.parametrize(
    "pod",
    [
        replica(),
        replica("logging,metrics"),
        replica("logging", **{"logging.sidecar.io/memory-limit": "2Gi", "logging.sidecar.io/memory-request": "4Gi"}),
        replica("no-such-profile"),
        replica("false"),
        {"metadata": {"annotations": {"sidecar.io/inject": "logging"}}, "spec": {"containers": []}},
    ],
    ids=["injected", "two-profiles", "invalid-values", "unknown-profile", "opted-out", "no-containers"],
)
def test_a_remembered_decision_equals_a_fresh_one(pod: dict[str, Any]) -> None:
    memo = DecisionMemo()
    memo.decide(copy.deepcopy(pod), context(), PROFILES, POLICY)
    remembered = memo.decide(copy.deepcopy(pod), context(), PROFILES, POLICY)
    assert memo.hits == 1
    assert remembered == decide(copy.deepcopy(pod), context(), PROFILES, POLICY)


def test_any_change_to_the_pod_decides_afresh() -> None:
    memo = DecisionMemo()
    memo.decide(replica(), context(), PROFILES, POLICY)
    changed = replica()
    changed["spec"]["containers"][0]["image"] = "nginx:1.28"
    decision = memo.decide(changed, context(), PROFILES, POLICY)
    assert memo.hits == 0
    assert decision == decide(changed, context(), PROFILES, POLICY)


# every field of the request context but the namespace's facts (compared by identity below)
CONTEXT_CHANGES = {
    "operation": "UPDATE",
    "kind": "apps/v1 Deployment",
    "namespace": "other",
    "dry_run": True,
    "owner_kind": "Job",
    "owner_name": "nightly",
    "namespace_unavailable": True,
    "object_bytes": 10**7,
}


def test_every_context_field_is_covered_by_a_case() -> None:
    """A field added to RequestContext must be added to the memo's cases (the memo keys on all of them)."""
    names = {f.name for f in dataclasses.fields(RequestContext)}
    assert names == {*CONTEXT_CHANGES, "namespace_facts"}


@pytest.mark.parametrize("field", sorted(CONTEXT_CHANGES))
def test_a_different_request_context_decides_afresh(field: str) -> None:
    memo = DecisionMemo()
    memo.decide(replica(), context(), PROFILES, POLICY)
    changed = context(**{field: CONTEXT_CHANGES[field]})
    decision = memo.decide(replica(), changed, PROFILES, POLICY)
    assert memo.hits == 0
    assert decision == decide(replica(), changed, PROFILES, POLICY)


def test_new_namespace_facts_decide_afresh_even_when_equal() -> None:
    """The informer replaces a namespace's facts when it changes: a new object is a new question."""
    memo = DecisionMemo()
    opted_in = NamespaceFacts("shop", {"sidecar.io/inject": "enabled"})
    memo.decide(replica(), context(namespace_facts=opted_in), PROFILES, POLICY)
    assert memo.decide(replica(), context(namespace_facts=opted_in), PROFILES, POLICY) is not None
    assert memo.hits == 1
    disabled = NamespaceFacts("shop", {"sidecar.io/inject": "disabled"})
    decision = memo.decide(replica(), context(namespace_facts=disabled), PROFILES, POLICY)
    assert memo.hits == 1
    assert decision.reason == "namespace-disabled"


def test_reloaded_profiles_decide_afresh() -> None:
    memo = DecisionMemo()
    before = memo.decide(replica(), context(), PROFILES, POLICY)
    (logging_v2,) = parse_profiles(
        "name: logging\nversion: '9'\ncontainers: [{name: shipper, image: busybox:1.37.0}]\n", "reloaded.yaml"
    )
    reloaded = ProfileSet({**PROFILES.profiles, "logging": logging_v2}, dict(PROFILES.sources))
    after = memo.decide(replica(), context(), reloaded, POLICY)
    assert memo.hits == 0
    assert after != before
    assert [op["value"]["name"] for op in after.patch if op["path"].startswith("/spec/containers/")] == ["shipper"]


def test_a_new_policy_decides_afresh() -> None:
    memo = DecisionMemo()
    memo.decide(replica("no-such-profile"), context(), PROFILES, POLICY)
    decision = memo.decide(replica("no-such-profile"), context(), PROFILES, InjectionPolicy(strict=True))
    assert memo.hits == 0
    assert decision.outcome == "denied"


def test_the_memo_keeps_at_most_capacity_entries_and_forgets_the_oldest() -> None:
    memo = DecisionMemo(capacity=3)
    pods = [replica(**{"example.com/n": str(i)}) for i in range(5)]
    for pod in pods:
        memo.decide(pod, context(), PROFILES, POLICY)
    assert len(memo) == 3
    memo.decide(pods[-1], context(), PROFILES, POLICY)
    memo.decide(pods[0], context(), PROFILES, POLICY)
    assert (memo.hits, len(memo)) == (1, 3)


def test_a_pod_over_the_size_bound_is_never_remembered() -> None:
    memo = DecisionMemo(max_pod_bytes=1024)
    big = replica(**{"example.com/blob": "x" * 2048})
    memo.decide(big, context(), PROFILES, POLICY)
    memo.decide(big, context(), PROFILES, POLICY)
    assert (memo.hits, len(memo)) == (0, 0)


def test_a_pod_that_is_not_plain_json_is_decided_without_the_memo() -> None:
    memo = DecisionMemo()
    odd = replica()
    odd["metadata"]["labels"][1] = "a non-string key"  # never from JSON; orjson refuses it
    decision = memo.decide(odd, context(), PROFILES, POLICY)
    assert decision.outcome == "injected"
    assert len(memo) == 0
