"""Resolution of a pod's profile names: its namespace's SidecarProfile, else the cluster's, else the
injector's own; no shadowing of cluster-level profiles; a broken edit keeps the last good version."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext
from sidecar_injector.profiles.catalog import (
    DISABLED,
    INVALID,
    SHADOWS,
    VALID,
    ProfileResolver,
    ResourceTable,
    desired_status,
    status_is_current,
)
from sidecar_injector.profiles.loading import ProfileSet, builtin_profiles
from sidecar_injector.profiles.resources import CLUSTER, NAMESPACED, ResourceRef

BASE = builtin_profiles()


def profile_object(
    kind: str,
    name: str,
    namespace: str | None = None,
    *,
    version: str = "1.0.0",
    image: str = "busybox:1.36.1",
    generation: int = 1,
    uid: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "uid": uid or f"uid-{namespace}-{name}",
        "generation": generation,
        "resourceVersion": str(100 + generation),
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": {"version": version, "containers": [{"name": f"sidecar-{name}", "image": image}], **spec},
    }


def tenant(name: str, namespace: str = "shop", **kwargs: Any) -> dict[str, Any]:
    return profile_object("SidecarProfile", name, namespace, **kwargs)


def platform(name: str, **kwargs: Any) -> dict[str, Any]:
    return profile_object("ClusterSidecarProfile", name, **kwargs)


def resolver_with(*objects: dict[str, Any], base: ProfileSet = BASE, namespaced: bool = True) -> ProfileResolver:
    table = ResourceTable()
    table.replace(NAMESPACED, [o for o in objects if o["kind"] == "SidecarProfile"])
    table.replace(CLUSTER, [o for o in objects if o["kind"] == "ClusterSidecarProfile"])
    return ProfileResolver(lambda: base, table, namespaced_enabled=namespaced)


def verdict(resolver: ProfileResolver, kind, name: str, namespace: str | None = None):
    return resolver.resolution.verdicts[ResourceRef(kind, namespace, name)]


# -- the order ----------------------------------------------------------------------------------


def test_a_sidecarprofile_applies_to_the_pods_of_its_namespace_only():
    resolver = resolver_with(tenant("audit", "shop"))

    assert resolver.profiles_for("shop")["audit"].containers[0]["name"] == "sidecar-audit"
    assert "audit" not in resolver.profiles_for("other")
    assert "audit" not in resolver.profiles_for(None)
    assert resolver.profiles_for("shop").sources["audit"] == "SidecarProfile shop/audit"
    assert set(BASE) <= set(resolver.profiles_for("shop")), "the injector's own profiles stay available"


def test_a_clustersidecarprofile_applies_everywhere_and_replaces_the_injectors_own_of_that_name():
    resolver = resolver_with(platform("audit"), platform("logging", version="7.0.0"))

    for namespace in ("shop", "other", None):
        profiles = resolver.profiles_for(namespace)
        assert profiles["audit"].version == "1.0.0"
        assert profiles["logging"].version == "7.0.0"
        assert profiles.sources["logging"] == "ClusterSidecarProfile logging"
    assert verdict(resolver, CLUSTER, "logging").message.endswith("(replaces the injector's own profile of that name)")


def test_the_namespace_view_is_what_the_core_decides_with():
    resolver = resolver_with(tenant("audit", "shop"))
    pod = {"metadata": {"annotations": {"sidecar.io/inject": "audit"}}, "spec": {"containers": [{"name": "app"}]}}

    here = decide(pod, RequestContext(namespace="shop"), resolver.profiles_for("shop"), InjectionPolicy())
    elsewhere = decide(pod, RequestContext(namespace="other"), resolver.profiles_for("other"), InjectionPolicy())

    assert here.outcome == "injected" and here.injected == ("audit",)
    assert elsewhere.outcome == "skipped" and elsewhere.reason == "no-known-profiles"


# -- no shadowing -----------------------------------------------------------------------------------


def test_a_sidecarprofile_named_like_a_clustersidecarprofile_is_not_accepted():
    resolver = resolver_with(platform("audit", version="1.0.0"), tenant("audit", "shop", version="6.6.6"))

    assert resolver.profiles_for("shop")["audit"].version == "1.0.0", "the platform's profile is never shadowed"
    refused = verdict(resolver, NAMESPACED, "audit", "shop")
    assert (refused.accepted, refused.reason, refused.in_use) == (False, SHADOWS, None)
    assert "ClusterSidecarProfile audit" in refused.message and refused.message.startswith("metadata.name:")


def test_a_sidecarprofile_named_like_one_of_the_injectors_own_profiles_is_not_accepted():
    resolver = resolver_with(tenant("logging", "shop", version="6.6.6"))

    assert resolver.profiles_for("shop")["logging"] == BASE["logging"]
    refused = verdict(resolver, NAMESPACED, "logging", "shop")
    assert refused.reason == SHADOWS and "the injector's profile logging" in refused.message


def test_a_cluster_profile_created_later_takes_the_name_back():
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    table.apply(NAMESPACED, "ADDED", tenant("audit", "shop", version="6.6.6"))
    assert resolver.profiles_for("shop")["audit"].version == "6.6.6"

    table.apply(CLUSTER, "ADDED", platform("audit", version="1.0.0"))

    assert resolver.profiles_for("shop")["audit"].version == "1.0.0"
    assert verdict(resolver, NAMESPACED, "audit", "shop").reason == SHADOWS


def test_namespaced_profiles_turned_off_are_never_used_and_say_so():
    resolver = resolver_with(tenant("audit", "shop"), namespaced=False)

    assert "audit" not in resolver.profiles_for("shop")
    refused = verdict(resolver, NAMESPACED, "audit", "shop")
    assert (refused.accepted, refused.reason) == (False, DISABLED)
    assert "turned off" in refused.message


def test_allowed_namespaces_on_a_sidecarprofile_is_refused_with_the_field():
    resolver = resolver_with(tenant("audit", "shop", allowedNamespaces={"names": ["shop"]}))

    refused = verdict(resolver, NAMESPACED, "audit", "shop")
    assert (refused.accepted, refused.reason) == (False, INVALID)
    assert refused.message.startswith("spec.allowedNamespaces: not allowed on a SidecarProfile")
    assert "audit" not in resolver.profiles_for("shop")


# -- broken resources ------------------------------------------------------------------------------


def test_a_broken_edit_keeps_the_last_good_version_and_says_which_field_is_wrong():
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    table.apply(NAMESPACED, "ADDED", tenant("audit", version="1.0.0"))
    good = resolver.profiles_for("shop")["audit"]

    table.apply(NAMESPACED, "MODIFIED", tenant("audit", version="2.0.0", image="busybox", generation=2))

    assert resolver.profiles_for("shop")["audit"] is good
    refused = verdict(resolver, NAMESPACED, "audit", "shop")
    assert (refused.accepted, refused.reason, refused.in_use) == (False, INVALID, good)
    assert refused.message.startswith("spec.containers[0].image: image 'busybox' has no tag")
    assert "the last accepted version 1.0.0" in refused.message

    table.apply(NAMESPACED, "MODIFIED", tenant("audit", version="3.0.0", generation=3))
    assert resolver.profiles_for("shop")["audit"].version == "3.0.0"
    assert verdict(resolver, NAMESPACED, "audit", "shop").reason == VALID


def test_a_broken_clustersidecarprofile_keeps_its_last_good_version_too():
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    table.apply(CLUSTER, "ADDED", platform("audit"))
    table.apply(CLUSTER, "MODIFIED", platform("audit", version="", generation=2))

    assert resolver.profiles_for("any")["audit"].version == "1.0.0"
    assert verdict(resolver, CLUSTER, "audit").message.startswith("spec.version: ")


def test_a_broken_resource_never_seen_good_is_not_used():
    resolver = resolver_with(tenant("audit", image="busybox:latest"))

    assert "audit" not in resolver.profiles_for("shop")
    refused = verdict(resolver, NAMESPACED, "audit", "shop")
    assert refused.in_use is None and refused.message.endswith("(not in use)")


def test_a_recreated_object_does_not_inherit_the_last_good_version_of_the_deleted_one():
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    table.apply(NAMESPACED, "ADDED", tenant("audit"))
    table.apply(NAMESPACED, "DELETED", tenant("audit"))
    assert "audit" not in resolver.profiles_for("shop")

    table.apply(NAMESPACED, "ADDED", tenant("audit", image="busybox", uid="another-uid"))

    assert "audit" not in resolver.profiles_for("shop")


def test_a_relist_keeps_the_last_good_version_of_a_resource_broken_meanwhile_and_drops_deleted_ones():
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    table.replace(NAMESPACED, [tenant("audit"), tenant("gone")])

    table.replace(NAMESPACED, [tenant("audit", image="busybox", generation=2)])

    assert resolver.profiles_for("shop")["audit"].version == "1.0.0"
    assert "gone" not in resolver.profiles_for("shop")


def _with_recorded_status(good: dict[str, Any], broken: dict[str, Any]) -> dict[str, Any]:
    """``broken`` carrying the status the writer left while ``good`` was accepted."""
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    kind = NAMESPACED if good["kind"] == "SidecarProfile" else CLUSTER
    table.apply(kind, "ADDED", good)
    ref = next(iter(table.snapshot))
    written = desired_status(table.snapshot[ref], resolver.resolution.verdicts[ref], "2025-01-01T00:00:00Z")
    return {**broken, "status": written}


def test_a_replica_starting_while_an_edit_is_broken_uses_the_accepted_spec_the_status_records():
    broken = _with_recorded_status(tenant("audit"), tenant("audit", version="2.0.0", image="busybox", generation=2))

    resolver = resolver_with(broken)  # a fresh table: this process never saw the good generation

    assert resolver.profiles_for("shop")["audit"].version == "1.0.0"
    refused = verdict(resolver, NAMESPACED, "audit", "shop")
    assert refused.accepted is False and "the last accepted version 1.0.0" in refused.message
    assert (
        desired_status(resolver.table.snapshot[ResourceRef(NAMESPACED, "shop", "audit")], refused, "t")["hash"]
        == broken["status"]["hash"]
    )


def test_a_recorded_spec_is_used_only_when_it_is_valid_and_the_profile_the_status_names():
    recorded = _with_recorded_status(platform("audit"), platform("audit", version="", generation=2))

    other_hash = {**recorded, "status": {**recorded["status"], "hash": "0123456789ab"}}
    assert "audit" not in resolver_with(other_hash).profiles_for("any")

    tampered = dict(recorded["status"])
    tampered["acceptedSpec"] = tampered["acceptedSpec"].replace("busybox:1.36.1", "busybox")
    assert "audit" not in resolver_with({**recorded, "status": tampered}).profiles_for("any")

    for garbage in ("{not json", "[1, 2]", 42):
        status = {**recorded["status"], "acceptedSpec": garbage}
        assert "audit" not in resolver_with({**recorded, "status": status}).profiles_for("any")

    assert resolver_with(recorded).profiles_for("any")["audit"].version == "1.0.0"


def test_the_accepted_spec_is_recorded_only_while_the_spec_is_accepted(judged_and_verdict):
    judged, accepted = judged_and_verdict
    assert json.loads(desired_status(judged, accepted, "t")["acceptedSpec"]) == judged.spec

    refused = type(accepted)(False, INVALID, "spec.version: bad", accepted.in_use)
    assert "acceptedSpec" not in desired_status(judged, refused, "t")  # the merge patch leaves it as it was


def test_a_status_only_change_is_not_read_again():
    table = ResourceTable()
    table.apply(NAMESPACED, "ADDED", tenant("audit"))
    before = table.snapshot[ResourceRef(NAMESPACED, "shop", "audit")]
    updated = tenant("audit")
    updated["status"] = {"observedGeneration": 1}
    updated["metadata"]["resourceVersion"] = "999"

    table.apply(NAMESPACED, "MODIFIED", updated)

    after = table.snapshot[ResourceRef(NAMESPACED, "shop", "audit")]
    assert after.profile is before.profile and after.status == {"observedGeneration": 1}


def test_objects_without_a_name_or_namespace_are_ignored():
    table = ResourceTable()
    nameless = tenant("audit")
    del nameless["metadata"]["name"]
    homeless = tenant("audit")
    del homeless["metadata"]["namespace"]
    table.replace(NAMESPACED, [nameless, homeless])
    assert table.snapshot == {}


# -- cheap per request ------------------------------------------------------------------------------


def test_views_are_built_once_per_change_not_per_request():
    table = ResourceTable()
    base = {"current": BASE}
    resolver = ProfileResolver(lambda: base["current"], table)
    table.apply(NAMESPACED, "ADDED", tenant("audit"))

    first = resolver.profiles_for("shop")
    assert resolver.profiles_for("shop") is first
    assert resolver.profiles_for("other") is resolver.profiles_for("elsewhere"), "namespaces share one view"
    assert resolver_with().profiles_for("shop") is BASE, "without resources the injector's own set is used as is"

    table.apply(NAMESPACED, "ADDED", tenant("billing"))
    assert resolver.profiles_for("shop") is not first and "billing" in resolver.profiles_for("shop")

    base["current"] = ProfileSet.of([BASE["proxy"]])
    assert "logging" not in resolver.profiles_for("shop"), "a reload of the injector's own profiles is seen"


def test_a_status_only_change_keeps_the_views_built():
    table = ResourceTable()
    resolver = ProfileResolver(lambda: BASE, table)
    table.apply(NAMESPACED, "ADDED", tenant("audit"))
    first = resolver.profiles_for("shop")
    written = tenant("audit")
    written["status"] = {"observedGeneration": 1, "version": "1.0.0"}
    written["metadata"]["resourceVersion"] = "999"

    table.apply(NAMESPACED, "MODIFIED", written)
    table.replace(NAMESPACED, [written])  # a relist bringing the same

    assert resolver.profiles_for("shop") is first, "rebuilt on the admission path for nothing"
    assert table.snapshot[ResourceRef(NAMESPACED, "shop", "audit")].status["version"] == "1.0.0"
    table.apply(NAMESPACED, "MODIFIED", tenant("audit", version="2.0.0", generation=2))
    assert resolver.profiles_for("shop")["audit"].version == "2.0.0"


def test_the_table_calls_back_on_every_change():
    table = ResourceTable()
    calls = []
    table.on_change = lambda: calls.append(table.generation)
    table.apply(NAMESPACED, "ADDED", tenant("audit"))
    table.apply(NAMESPACED, "DELETED", tenant("audit"))
    table.apply(NAMESPACED, "DELETED", tenant("never-there"))
    assert calls == [1, 2]


# -- status ----------------------------------------------------------------------------------------


@pytest.fixture
def judged_and_verdict():
    resolver = resolver_with(tenant("audit"))
    ref = ResourceRef(NAMESPACED, "shop", "audit")
    return resolver.table.snapshot[ref], resolver.resolution.verdicts[ref]


def test_the_desired_status_carries_the_condition_generation_version_and_hash(judged_and_verdict):
    judged, accepted = judged_and_verdict

    status = desired_status(judged, accepted, "2025-01-01T00:00:00Z")

    assert status == {
        "observedGeneration": 1,
        "version": "1.0.0",
        "hash": accepted.in_use.hash,
        "acceptedSpec": '{"containers":[{"image":"busybox:1.36.1","name":"sidecar-audit"}],"version":"1.0.0"}',
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Valid",
                "message": "in use for pods of namespace shop: version 1.0.0",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    assert not status_is_current(judged, status)


def test_the_transition_time_moves_only_when_the_condition_flips(judged_and_verdict):
    judged, accepted = judged_and_verdict
    written = desired_status(judged, accepted, "2025-01-01T00:00:00Z")
    now_current = type(judged)(**{**judged.__dict__, "status": written})

    again = desired_status(now_current, accepted, "2025-06-01T00:00:00Z")

    assert again == written and status_is_current(now_current, again)
    refused = type(accepted)(False, INVALID, "spec.version: bad", accepted.in_use)
    flipped = desired_status(now_current, refused, "2025-06-01T00:00:00Z")
    assert flipped["conditions"][0]["lastTransitionTime"] == "2025-06-01T00:00:00Z"
    assert not status_is_current(now_current, flipped)
