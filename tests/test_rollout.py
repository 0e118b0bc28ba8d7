"""`profiles stale` closing the loop: missed pods, and `--restart` rolling the owners of stale and
missed pods like `kubectl rollout restart` — against the fake API server, with a fake clock for
the rate limit (no test waits for real minutes)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest

from kube_fake_api import FakeKubeApi
from sidecar_injector.cli import main
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.rollout import RESTARTED_AT, Owner, Restarter, owner_of, owners_of, rollout_state
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.core.staleness import StalePod, in_use_profiles, missed_pods, stale_pods
from sidecar_injector.profiles.catalog import offline_resolver
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.profiles.model import Profile

PROFILES = builtin_profiles()
DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
STATEFULSETS = "apps/v1/statefulsets"
DAEMONSETS = "apps/v1/daemonsets"


def owned_by(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}]


def pod(
    name: str,
    namespace: str = "shop",
    *,
    inject: str | None = None,
    owner: tuple[str, str] | None = None,
    profiles: dict[str, Profile] | None = None,
) -> dict[str, Any]:
    """A running pod; with ``inject`` and ``profiles``, as the webhook left it (patch applied)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": {}}
    if inject:
        metadata["annotations"]["sidecar.io/inject"] = inject
    if owner:
        metadata["ownerReferences"] = owned_by(*owner)
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    if profiles is not None:
        decision = decide(obj, RequestContext(namespace=namespace), profiles, InjectionPolicy())
        assert decision.outcome == "injected"
        obj = jsonpatch.apply_patch(copy.deepcopy(obj), orjson.loads(orjson.dumps(decision.patch)))
    obj["status"] = {"phase": "Running"}
    return obj


def changed(profile: Profile, version: str) -> Profile:
    body = profile.model_dump(by_alias=True)
    return Profile.model_validate(
        {**body, "version": version, "description": "changed", "appEnv": [{"name": "V", "value": version}]}
    )


OLD_LOGGING = changed(PROFILES["logging"], "0.1.0")
OLD = {**PROFILES, "logging": OLD_LOGGING}


def deployment(name: str, namespace: str = "shop", *, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}},
            **spec,
        },
    }


def replicaset(name: str, deployment_name: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": owned_by("Deployment", deployment_name)},
        "spec": {},
    }


def restarted_at(fake: FakeKubeApi, resource: str, name: str, namespace: str = "shop") -> str | None:
    obj = fake.get_object(resource, namespace, name) or {}
    return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)


def patches(fake: FakeKubeApi) -> list:
    return fake.received(lambda r: r.method == "PATCH")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def restarter(fake: FakeKubeApi, clock: FakeClock, **options: Any) -> Restarter:
    settings: dict[str, Any] = {"max_per_minute": 60, "rollout_timeout_seconds": 30, "poll_seconds": 1}
    settings.update(options)
    return Restarter(new_api_client(fake.configuration()), clock=clock.clock, sleep=clock.sleep, **settings)


# -- missed pods and the current profiles ------------------------------------------------------------------


def test_a_pod_the_rules_would_inject_and_that_has_nothing_is_missed():
    pods = [
        pod("annotated", inject="logging"),
        pod("in-enabled-namespace", "auto"),
        pod("plain", "other"),
        pod("done", inject="logging") | {"status": {"phase": "Succeeded"}},
        pod("injected", inject="logging", profiles=PROFILES),
    ]
    namespaces = {"auto": NamespaceFacts("auto", {"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": "metrics"})}

    found = missed_pods(pods, PROFILES, InjectionPolicy(), namespaces)

    assert [(s.namespace, s.pod, s.profile, s.state) for s in found] == [
        ("auto", "in-enabled-namespace", "metrics", "missed"),
        ("shop", "annotated", "logging", "missed"),
    ]
    assert found[1].current_hash == PROFILES["logging"].hash and found[1].recorded_hash is None


def test_a_pod_lacking_a_profile_its_namespace_asks_for_now_is_missed_for_that_one_only():
    injected = pod("web", "auto", inject="logging", profiles=PROFILES)
    namespaces = {"auto": NamespaceFacts("auto", {"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": "metrics"})}
    [found] = missed_pods([injected], PROFILES, InjectionPolicy(), namespaces)
    assert (found.pod, found.profile) == ("web", "metrics")


def test_pods_being_deleted_are_neither_stale_nor_missed():
    leaving = pod("old", inject="logging", profiles=OLD)
    leaving["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert stale_pods([leaving], PROFILES) == []
    assert missed_pods([pod("x", inject="logging") | {"metadata": leaving["metadata"]}], PROFILES, InjectionPolicy()) == []


def test_a_broken_resource_counts_with_the_version_its_status_says_is_in_use():
    """The server keeps injecting the last good version: its pods must not be restarted for nothing."""
    in_use = OLD_LOGGING
    broken = {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": "ClusterSidecarProfile",
        "metadata": {"name": "logging", "generation": 2},
        "spec": {"version": "2.0.0", "containers": [{"name": "x", "image": "busybox"}]},
        "status": {"version": in_use.version, "hash": in_use.hash},
    }
    resolver = offline_resolver(PROFILES, [broken])

    assert stale_pods([pod("web", inject="logging", profiles=OLD)], in_use_profiles(resolver)) == []
    current = pod("new", inject="logging", profiles=PROFILES)
    [found] = stale_pods([current], in_use_profiles(resolver))
    assert (found.state, found.current_hash) == ("outdated", in_use.hash)


# -- owners ----------------------------------------------------------------------------------------------------


def test_the_owner_of_a_pod_is_its_replicasets_deployment_or_its_direct_controller():
    replicasets = {
        ("shop", "web-5d8f"): replicaset("web-5d8f", "web"),
        ("shop", "lonely-1"): {"metadata": {"name": "lonely-1"}},
    }

    def read(namespace: str, name: str) -> dict | None:
        return replicasets.get((namespace, name))

    assert owner_of(pod("a", owner=("ReplicaSet", "web-5d8f")), read) == Owner("Deployment", "shop", "web")
    assert owner_of(pod("b", owner=("ReplicaSet", "lonely-1")), read) == Owner("ReplicaSet", "shop", "lonely-1")
    assert owner_of(pod("c", owner=("StatefulSet", "db")), read) == Owner("StatefulSet", "shop", "db")
    assert owner_of(pod("d", owner=("Job", "backup-1")), read) == Owner("Job", "shop", "backup-1")
    assert owner_of(pod("e"), read) == Owner("Pod", "shop", "e")


def test_owners_group_the_pods_and_read_each_replicaset_once():
    reads: list[tuple[str, str]] = []

    def read(namespace: str, name: str) -> dict:
        reads.append((namespace, name))
        return replicaset(name, "web")

    pods = {("shop", n): pod(n, owner=("ReplicaSet", "web-5d8f")) for n in ("web-1", "web-2")}
    found = [
        StalePod("shop", n, p, None, None, "1", "h", "missed") for n in ("web-1", "web-2") for p in ("logging", "metrics")
    ]

    assert owners_of(found, pods, read) == {Owner("Deployment", "shop", "web"): ["web-1", "web-2"]}
    assert reads == [("shop", "web-5d8f")]


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        ("Deployment", {"metadata": {"generation": 3}, "status": {"observedGeneration": 2}}, "mid-rollout"),
        (
            "Deployment",
            {"spec": {"replicas": 3}, "status": {"updatedReplicas": 1, "replicas": 3, "availableReplicas": 1}},
            "mid-rollout",
        ),
        (
            "Deployment",
            {"spec": {"replicas": 2}, "status": {"updatedReplicas": 2, "replicas": 3, "availableReplicas": 2}},
            "mid-rollout",
        ),
        ("Deployment", {"spec": {"replicas": 2, "paused": True}}, "paused"),
        (
            "Deployment",
            {"spec": {"replicas": 2}, "status": {"updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}},
            None,
        ),
        (
            "StatefulSet",
            {"spec": {"replicas": 1}, "status": {"updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}},
            "mid-rollout",
        ),
        ("StatefulSet", {"spec": {"replicas": 1, "updateStrategy": {"type": "OnDelete"}}}, "OnDelete"),
        (
            "StatefulSet",
            {"spec": {"replicas": 1}, "status": {"updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}},
            None,
        ),
        (
            "DaemonSet",
            {"status": {"desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberAvailable": 3}},
            "mid-rollout",
        ),
        ("DaemonSet", {"status": {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}}, None),
    ],
)
def test_rollout_state_says_when_an_owner_must_not_be_restarted_now(kind, obj, expected):
    state = rollout_state(kind, obj)
    assert state is None if expected is None else expected in state


# -- restarting ------------------------------------------------------------------------------------------------


def test_a_restart_sets_the_template_annotation_like_kubectl_and_waits_for_the_rollout(fake, clock):
    fake.put_object(DEPLOYMENTS, deployment("web"))

    [outcome] = restarter(fake, clock).run({Owner("Deployment", "shop", "web"): ["web-1"]})

    assert (outcome.action, outcome.detail) == ("restarted", "rolled out")
    assert restarted_at(fake, DEPLOYMENTS, "web")
    [patch] = patches(fake)
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at(fake, DEPLOYMENTS, "web")}}}}
    }


def test_restarts_are_rate_limited(fake, clock):
    for name in ("a", "b", "c"):
        fake.put_object(DEPLOYMENTS, deployment(name))

    outcomes = restarter(fake, clock, max_per_minute=2, rollout_timeout_seconds=0).run(
        {Owner("Deployment", "shop", name): [f"{name}-1"] for name in ("a", "b", "c")}
    )

    assert [o.action for o in outcomes] == ["restarted"] * 3
    assert clock.sleeps == [30.0, 30.0], "two restarts a minute: one every 30 seconds"


def test_the_time_spent_waiting_for_a_rollout_counts_towards_the_rate_limit(fake, clock):
    fake.auto_rollout = False
    for name in ("a", "b"):
        fake.put_object(DEPLOYMENTS, deployment(name))
        fake.set_status(
            DEPLOYMENTS, "shop", name, {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        )
    done = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    slow = restarter(fake, clock, max_per_minute=4)
    original_sleep = clock.sleep

    def sleep(seconds: float) -> None:  # the controller finishes a rollout after 10 s of polling
        original_sleep(seconds)
        for name in ("a", "b"):
            obj = fake.get_object(DEPLOYMENTS, "shop", name)
            if obj["metadata"]["generation"] == 2 and len([s for s in clock.sleeps if s == 1]) >= 10:
                fake.set_status(DEPLOYMENTS, "shop", name, done)

    slow._sleep = sleep
    outcomes = slow.run({Owner("Deployment", "shop", n): [f"{n}-1"] for n in ("a", "b")})

    assert [o.action for o in outcomes] == ["restarted", "restarted"]
    assert 5.0 in clock.sleeps, "15 s between restarts, of which the 10 s rollout already took 10"


def test_owners_mid_rollout_paused_or_on_delete_are_skipped_untouched(fake, clock):
    fake.auto_rollout = False
    fake.put_object(DEPLOYMENTS, deployment("rolling", replicas=3))
    fake.set_status(DEPLOYMENTS, "shop", "rolling", {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 1})
    fake.auto_rollout = True
    fake.put_object(DEPLOYMENTS, deployment("paused", paused=True))
    fake.put_object(STATEFULSETS, deployment("db", updateStrategy={"type": "OnDelete"}))
    owners = {
        Owner("Deployment", "shop", "rolling"): ["r"],
        Owner("Deployment", "shop", "paused"): ["p"],
        Owner("StatefulSet", "shop", "db"): ["d"],
    }

    outcomes = {str(o.owner): o for o in restarter(fake, clock).run(owners)}

    assert {o.action for o in outcomes.values()} == {"skipped"}
    assert "mid-rollout" in outcomes["Deployment shop/rolling"].detail
    assert outcomes["Deployment shop/paused"].detail == "paused"
    assert "OnDelete" in outcomes["StatefulSet shop/db"].detail
    assert patches(fake) == []


def test_bare_pods_jobs_and_other_owners_are_listed_never_touched(fake, clock):
    owners = {
        Owner("Pod", "shop", "debug"): ["debug"],
        Owner("Job", "shop", "backup-1"): ["backup-1-x"],
        Owner("ReplicaSet", "shop", "lonely"): ["lonely-1"],
    }

    outcomes = restarter(fake, clock).run(owners)

    assert {o.action for o in outcomes} == {"not touched"}
    assert fake.received(lambda r: r.path.startswith("/apis/")) == [], "nothing is read or written for them"
    assert any("bare pod" in o.detail for o in outcomes) and any("Job" in o.detail for o in outcomes)


def test_a_dry_run_writes_nothing(fake, clock):
    fake.put_object(DEPLOYMENTS, deployment("web"))
    fake.put_object(DAEMONSETS, deployment("agent"))

    outcomes = restarter(fake, clock, dry_run=True, max_per_minute=1).run(
        {Owner("Deployment", "shop", "web"): ["w"], Owner("DaemonSet", "shop", "agent"): ["a"]}
    )

    assert [o.action for o in outcomes] == ["would restart", "would restart"]
    assert patches(fake) == [] and clock.sleeps == []


def test_a_rollout_that_does_not_finish_stops_the_run(fake, clock):
    fake.put_object(DEPLOYMENTS, deployment("a"))
    fake.put_object(DEPLOYMENTS, deployment("b"))
    fake.auto_rollout = False  # the controller never finishes the rollout restart starts

    outcomes = restarter(fake, clock, rollout_timeout_seconds=20).run(
        {Owner("Deployment", "shop", "a"): ["a-1"], Owner("Deployment", "shop", "b"): ["b-1"]}
    )

    assert [o.action for o in outcomes] == ["not finished", "stopped"]
    assert "did not finish within 20 s" in outcomes[0].detail
    assert restarted_at(fake, DEPLOYMENTS, "b") is None


def test_an_owner_that_is_gone_is_skipped(fake, clock):
    [outcome] = restarter(fake, clock).run({Owner("StatefulSet", "shop", "gone"): ["gone-0"]})
    assert (outcome.action, outcome.detail) == ("skipped", "it no longer exists")


# -- the command -------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cluster(fake: FakeKubeApi, tmp_path: Path, monkeypatch) -> tuple[FakeKubeApi, str]:
    """A Deployment with a stale pod, a StatefulSet with a missed one, a bare pod and a Job's pod."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fake.add_namespace("shop")
    fake.put_object(DEPLOYMENTS, deployment("web"))
    fake.put_object(REPLICASETS, replicaset("web-5d8f", "web"))
    fake.put_object(STATEFULSETS, deployment("db", replicas=1))
    fake.set_pods(
        [
            pod("web-5d8f-a", inject="logging", owner=("ReplicaSet", "web-5d8f"), profiles=OLD),
            pod("web-5d8f-b", inject="logging", owner=("ReplicaSet", "web-5d8f"), profiles=OLD),
            pod("db-0", inject="metrics", owner=("StatefulSet", "db")),
            pod("debug", inject="logging"),
            pod("backup-1-x", inject="logging", owner=("Job", "backup-1")),
            pod("current", inject="logging", owner=("ReplicaSet", "web-5d8f"), profiles=PROFILES),
        ]
    )
    return fake, str(fake.write_kubeconfig(tmp_path / "kubeconfig"))


def test_stale_lists_missed_pods_next_to_stale_ones(cluster):
    fake, kubeconfig = cluster

    code, out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig)

    assert code == 1, err
    rows = {(line.split()[1], line.split()[3]) for line in out.splitlines()[1:]}
    assert rows == {
        ("web-5d8f-a", "outdated"),
        ("web-5d8f-b", "outdated"),
        ("db-0", "missed"),
        ("debug", "missed"),
        ("backup-1-x", "missed"),
    }
    assert patches(fake) == []


def test_stale_restart_dry_run_plans_without_touching_anything(cluster):
    fake, kubeconfig = cluster

    code, out, err = run_cli(
        "profiles", "stale", "--kubeconfig", kubeconfig, "--local-profiles", "--restart", "--dry-run", "-o", "json"
    )

    assert code == 0, err
    report = json.loads(out)
    actions = {f"{o['kind']} {o['name']}": (o["action"], o["pods"]) for o in report["owners"]}
    assert actions == {
        "Deployment web": ("would restart", ["web-5d8f-a", "web-5d8f-b"]),
        "StatefulSet db": ("would restart", ["db-0"]),
        "Pod debug": ("not touched", ["debug"]),
        "Job backup-1": ("not touched", ["backup-1-x"]),
    }
    assert len(report["pods"]) == 5
    assert patches(fake) == []


def test_stale_restart_rolls_the_deployment_and_the_statefulset(cluster):
    fake, kubeconfig = cluster

    code, out, err = run_cli(
        "profiles", "stale", "--kubeconfig", kubeconfig, "--local-profiles", "--restart", "--max-per-minute", "600"
    )

    assert code == 0, err
    assert restarted_at(fake, DEPLOYMENTS, "web") and restarted_at(fake, STATEFULSETS, "db")
    assert len(patches(fake)) == 2
    table = out.split("\n\n")[1]
    assert table.splitlines()[0].split() == ["OWNER", "PODS", "ACTION", "WHY"]
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in table.splitlines()[1:]}
    assert rows["Deployment shop/web"] == ["2", "restarted", "rolled", "out"]
    assert rows["StatefulSet shop/db"] == ["1", "restarted", "rolled", "out"]
    assert rows["Job shop/backup-1"][1:3] == ["not", "touched"]
    assert "restarted Deployment shop/web (2 pod(s))" in err


def test_stale_restart_exits_1_when_a_rollout_does_not_finish(cluster):
    fake, kubeconfig = cluster
    fake.auto_rollout = False

    code, out, _err = run_cli(
        "profiles",
        "stale",
        "--kubeconfig",
        kubeconfig,
        "--local-profiles",
        "--restart",
        "--max-per-minute",
        "600",
        "--rollout-timeout",
        "0.5",
    )

    assert code == 1
    assert "not finished" in out and "stopped" in out


def test_dry_run_without_restart_is_a_usage_error(cluster):
    _fake, kubeconfig = cluster
    code, _out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig, "--dry-run")
    assert code == 2 and "--dry-run goes with --restart" in err


def test_stale_compares_with_the_clusters_profile_resources(cluster):
    fake, kubeconfig = cluster
    fake.set_pods([])
    tenant = {
        "metadata": {"name": "audit", "namespace": "shop"},
        "spec": {"version": "2.0.0", "containers": [{"name": "audit", "image": "busybox:1.36.1"}]},
    }
    fake.put_object("sidecar.io/v1alpha1/sidecarprofiles", tenant)
    old = Profile.model_validate(
        {"name": "audit", "version": "1.0.0", "containers": [{"name": "audit", "image": "busybox:1.36.0"}]}
    )
    fake.set_pods(
        [
            pod("web-1", inject="audit", profiles={"audit": old}),
            pod("other-1", "other", inject="audit", profiles={"audit": old}),
        ]
    )

    code, out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig, "-o", "json")

    assert code == 1, err
    found = {(item["namespace"], item["state"], item["current_version"]) for item in json.loads(out)}
    assert found == {("shop", "outdated", "2.0.0"), ("other", "removed", None)}


def test_stale_without_the_crds_says_so_and_goes_on(cluster):
    fake, kubeconfig = cluster
    fake.crds_installed = False
    code, _out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig)
    assert code == 1
    assert "note: no ClusterSidecarProfile resources: the clustersidecarprofiles.sidecar.io CRD is not installed" in err
