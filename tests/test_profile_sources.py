"""Profiles as resources in the server, against the fake API server over a socket: the watch of
both kinds (410/relist, outages), readiness, the last good version of a broken resource, and the
status written by exactly one of two replicas (a Lease)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kube_fake_api import FakeKubeApi
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.profile_sources import ProfileResources
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.runtime.metrics import Metrics
from waiting import wait_until

SCP = "sidecar.io/v1alpha1/sidecarprofiles"
CSCP = "sidecar.io/v1alpha1/clustersidecarprofiles"
SCP_PATH = "/apis/sidecar.io/v1alpha1/sidecarprofiles"
CSCP_PATH = "/apis/sidecar.io/v1alpha1/clustersidecarprofiles"
LEASES = "coordination.k8s.io/v1/leases"
BASE = builtin_profiles()

FAST_INFORMERS = {
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.2,
    "watch_timeout_seconds": 30,
    "request_timeout_seconds": 5,
}
#: short durations (retry < renew deadline < lease duration), so that a test sees a takeover in seconds
FAST_ELECTION = {"lease_duration_seconds": 3, "renew_deadline_seconds": 2, "retry_period_seconds": 1}


def spec(version: str = "1.0.0", image: str = "busybox:1.36.1", **extra: Any) -> dict[str, Any]:
    return {"version": version, "containers": [{"name": "sidecar-audit", "image": image}], **extra}


def tenant(name: str, namespace: str = "shop", **kwargs: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec(**kwargs)}


def platform(name: str, **kwargs: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec(**kwargs)}


@pytest.fixture
def make(fake: FakeKubeApi) -> Iterator[Callable[..., ProfileResources]]:
    made: list[ProfileResources] = []

    def build(*, agent: str = "replica-a", start: bool = True, **options: Any) -> ProfileResources:
        api = new_api_client(fake.configuration())
        api.user_agent = agent
        settings: dict[str, Any] = {
            "write_status": False,
            "informer_options": FAST_INFORMERS,
            "lease_namespace": "sidecar-injector",
            "election_options": FAST_ELECTION,
            "identity": agent,
        }
        settings.update(options)
        resources = ProfileResources(api, lambda: BASE, **settings)
        made.append(resources)
        if start:
            resources.start()
        return resources

    yield build
    for resources in made:
        resources.stop()


def version_in(resources: ProfileResources, namespace: str | None, name: str) -> str | None:
    profile = resources.profiles_for(namespace).get(name)
    return profile.version if profile else None


def accepted(fake: FakeKubeApi, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    obj = fake.get_object(resource, namespace, name) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Accepted"), None)


def status_patches(fake: FakeKubeApi, agent: str | None = None) -> list:
    return fake.received(
        lambda r: (
            r.method == "PATCH" and r.path.endswith("/status") and (agent is None or r.headers.get("user-agent") == agent)
        )
    )


# -- the watch of both kinds --------------------------------------------------------------------------


def test_both_kinds_are_listed_then_watched_and_resolved_per_namespace(fake, make):
    fake.put_object(SCP, tenant("audit", "shop"))
    fake.put_object(CSCP, platform("trace"))
    resources = make()
    wait_until(lambda: resources.synced, what="the first lists")

    assert version_in(resources, "shop", "audit") == "1.0.0"
    assert version_in(resources, "other", "audit") is None
    assert version_in(resources, "other", "trace") == "1.0.0"

    fake.put_object(SCP, tenant("audit", "shop", version="2.0.0"))
    fake.put_object(CSCP, platform("billing"))
    wait_until(lambda: version_in(resources, "shop", "audit") == "2.0.0", what="MODIFIED")
    wait_until(lambda: version_in(resources, "any", "billing") == "1.0.0", what="ADDED")
    fake.delete_object(CSCP, None, "trace")
    wait_until(lambda: version_in(resources, "any", "trace") is None, what="DELETED")

    assert len(fake.lists(SCP_PATH)) == 1 and len(fake.lists(CSCP_PATH)) == 1, "events are applied without relisting"
    watch = fake.watches(SCP_PATH)[0].query
    assert watch["allowWatchBookmarks"] == "true" and watch["resourceVersion"]


def test_a_410_gone_relists_the_profiles_and_sees_what_the_watch_missed(fake, make):
    metrics = Metrics()
    resources = make(metrics=metrics)
    wait_until(lambda: resources.synced and fake.open_watches() >= 2, what="both watches")
    fake.put_object(SCP, tenant("missed", "shop"), silent=True)

    fake.force_gone()

    wait_until(lambda: version_in(resources, "shop", "missed") == "1.0.0", what="the relist")
    assert len(fake.lists(SCP_PATH)) == 2
    sample = metrics.registry.get_sample_value
    assert sample("sidecar_injector_profile_resource_relists_total", {"kind": "SidecarProfile", "reason": "expired"}) == 1


def test_the_watch_survives_an_outage_of_the_api_server(fake, make, caplog):
    resources = make()
    wait_until(lambda: resources.synced, what="the first lists")
    fake.go_down()
    fake.put_object(CSCP, platform("while-down"))
    wait_until(lambda: "ClusterSidecarProfile watch failed; retrying" in caplog.text, what="a failed reconnect")

    fake.come_up()

    wait_until(lambda: version_in(resources, None, "while-down") == "1.0.0", what="the watch after the outage")


def test_namespaced_profiles_off_watches_only_the_cluster_kind(fake, make):
    fake.put_object(SCP, tenant("audit", "shop"))
    fake.put_object(CSCP, platform("trace"))
    resources = make(namespaced=False)
    wait_until(lambda: resources.synced, what="the first list")

    assert version_in(resources, "shop", "trace") == "1.0.0"
    assert version_in(resources, "shop", "audit") is None
    assert fake.lists(SCP_PATH) == [] and fake.watches(SCP_PATH) == []


# -- readiness ----------------------------------------------------------------------------------------


def test_readiness_waits_for_the_first_list_and_says_so(fake, make):
    fake.go_down()
    resources = make(sync_timeout_seconds=600)

    ready, note = resources.readiness()
    assert not ready and note.startswith("waiting for the first list of ClusterSidecarProfiles and SidecarProfiles")

    fake.come_up()
    wait_until(lambda: resources.readiness() == (True, "synced"), what="the first list")


def test_readiness_is_bounded_when_the_api_server_stays_away(fake, make):
    fake.go_down()
    resources = make(sync_timeout_seconds=0.2)

    wait_until(lambda: resources.readiness()[0], what="the bound")
    assert "not listed yet: answering without them" in resources.readiness()[1]
    assert set(resources.profiles_for("shop")) == set(BASE), "the injector's own profiles answer meanwhile"


def test_a_missing_crd_keeps_retrying_and_answers_with_the_injectors_own_profiles(fake, make, caplog):
    fake.crds_installed = False
    resources = make(sync_timeout_seconds=600)
    wait_until(lambda: "ClusterSidecarProfile list failed; retrying" in caplog.text, what="a failed list")
    assert not resources.synced and set(resources.profiles_for("shop")) == set(BASE)

    fake.crds_installed = True
    wait_until(lambda: resources.synced, what="the list once the CRDs exist")


# -- broken resources and their status ---------------------------------------------------------------------


def test_a_broken_edit_keeps_the_last_good_version_and_the_status_names_the_field(fake, make):
    fake.put_object(SCP, tenant("audit", "shop", version="1.0.0"))
    resources = make(write_status=True)
    wait_until(lambda: (accepted(fake, SCP, "shop", "audit") or {}).get("status") == "True", what="Accepted=True")
    good = resources.profiles_for("shop")["audit"]
    status = fake.get_object(SCP, "shop", "audit")["status"]
    assert (status["observedGeneration"], status["version"], status["hash"]) == (1, "1.0.0", good.hash)

    fake.put_object(SCP, tenant("audit", "shop", version="2.0.0", image="busybox"))

    wait_until(lambda: (accepted(fake, SCP, "shop", "audit") or {}).get("status") == "False", what="Accepted=False")
    condition = accepted(fake, SCP, "shop", "audit")
    assert condition["reason"] == "Invalid"
    assert condition["message"].startswith("spec.containers[0].image: image 'busybox' has no tag")
    assert condition["observedGeneration"] == 2
    status = fake.get_object(SCP, "shop", "audit")["status"]
    assert (status["observedGeneration"], status["version"], status["hash"]) == (2, "1.0.0", good.hash)
    assert resources.profiles_for("shop")["audit"] is good, "the broken edit never replaced the last good version"


def test_a_replica_started_after_a_broken_edit_injects_the_version_the_others_keep(fake, make):
    fake.put_object(SCP, tenant("audit", "shop", version="1.0.0"))
    first = make(write_status=True)
    wait_until(lambda: (accepted(fake, SCP, "shop", "audit") or {}).get("status") == "True", what="Accepted=True")
    good = first.profiles_for("shop")["audit"]
    fake.put_object(SCP, tenant("audit", "shop", version="2.0.0", image="busybox"))
    wait_until(lambda: (accepted(fake, SCP, "shop", "audit") or {}).get("status") == "False", what="Accepted=False")
    first.stop()

    restarted = make(agent="replica-b", write_status=True)  # never saw version 1.0.0's spec itself
    wait_until(lambda: restarted.synced, what="the first lists")

    assert version_in(restarted, "shop", "audit") == "1.0.0"
    assert restarted.profiles_for("shop")["audit"].hash == good.hash
    wait_until(lambda: restarted.writer.leading, what="the restarted replica to take the Lease")
    wait_until(lambda: restarted.writer.write_all() == 0, what="every status current")
    status = fake.get_object(SCP, "shop", "audit")["status"]
    assert (status["version"], status["hash"]) == ("1.0.0", good.hash), "the recorded spec survives the new leader"
    assert json.loads(status["acceptedSpec"])["version"] == "1.0.0"


def test_a_shadowing_sidecarprofile_is_not_accepted_and_its_status_says_why(fake, make):
    fake.put_object(CSCP, platform("audit"))
    fake.put_object(SCP, tenant("audit", "shop", version="6.6.6"))
    fake.put_object(SCP, tenant("logging", "shop"))
    resources = make(write_status=True)

    wait_until(lambda: accepted(fake, SCP, "shop", "logging") and accepted(fake, SCP, "shop", "audit"), what="statuses")
    for name in ("audit", "logging"):
        condition = accepted(fake, SCP, "shop", name)
        assert (condition["status"], condition["reason"]) == ("False", "ShadowsClusterProfile")
        assert "version" not in fake.get_object(SCP, "shop", name)["status"]
    assert accepted(fake, CSCP, None, "audit")["status"] == "True"
    assert version_in(resources, "shop", "audit") == "1.0.0"


def test_statuses_are_written_once_and_not_again_while_nothing_changes(fake, make):
    fake.put_object(SCP, tenant("audit", "shop"))
    fake.put_object(CSCP, platform("trace"))
    resources = make(write_status=True)
    wait_until(lambda: len(status_patches(fake)) == 2, what="two status writes")
    wait_until(
        lambda: all(j.status for j in resources.table.snapshot.values()), what="the written statuses to come back by watch"
    )

    assert resources.writer.write_all() == 0, "a status that is current is not written again"
    assert len(status_patches(fake)) == 2


def test_a_failed_status_write_is_retried(fake, make):
    fake.status_patch_status = 500
    fake.put_object(CSCP, platform("trace"))
    make(write_status=True)
    wait_until(lambda: len(status_patches(fake)) >= 1, what="a failed write")
    assert accepted(fake, CSCP, None, "trace") is None

    fake.status_patch_status = None

    wait_until(lambda: accepted(fake, CSCP, None, "trace"), timeout=60, what="the retried write")


def test_an_unexpected_error_while_writing_does_not_end_the_writer(fake, make, caplog):
    resources = make(write_status=True, start=False)
    real = resources.writer.write_all
    calls = []

    def failing_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return real()

    resources.writer.write_all = failing_once  # type: ignore[method-assign]
    fake.put_object(CSCP, platform("trace"))
    resources.start()

    wait_until(lambda: accepted(fake, CSCP, None, "trace"), timeout=60, what="the write after the error")
    assert "background job profile-status-writer failed; restarting it" in caplog.text  # runtime/supervise.py


# -- one writer ------------------------------------------------------------------------------------------


def test_status_is_written_by_exactly_one_of_two_replicas_and_the_other_takes_over(fake, make):
    first = make(write_status=True, agent="replica-a")
    wait_until(lambda: first.writer.leading, what="the first replica to lead")
    second = make(write_status=True, agent="replica-b")
    wait_until(lambda: second.synced, what="the second replica's lists")

    for number in range(3):
        fake.put_object(CSCP, platform(f"p{number}"))
    wait_until(lambda: all(accepted(fake, CSCP, None, f"p{n}") for n in range(3)), what="three statuses")

    assert not second.writer.leading
    assert status_patches(fake, "replica-b") == [], "the replica without the Lease wrote a status"
    assert len(status_patches(fake, "replica-a")) == 3
    lease = fake.get_object(LEASES, "sidecar-injector", "sidecar-injector-profile-status")
    assert lease["spec"]["holderIdentity"] == "replica-a"

    first.stop()  # releases the Lease
    wait_until(lambda: second.writer.leading, what="the second replica to take over")
    fake.put_object(CSCP, platform("p3"))
    wait_until(lambda: accepted(fake, CSCP, None, "p3"), what="the status written by the new leader")
    assert len(status_patches(fake, "replica-b")) == 1
    assert len(status_patches(fake, "replica-a")) == 3


def test_a_leader_that_cannot_renew_stops_writing(fake, make):
    resources = make(write_status=True)
    wait_until(lambda: resources.writer.leading, what="leading")

    fake.go_down()

    wait_until(lambda: not resources.writer.leading, what="the lease to be given up")
    fake.come_up()
    wait_until(lambda: resources.writer.leading, what="leading again")
