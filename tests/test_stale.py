"""`profiles stale`: which pods were injected with a profile that has changed or gone since."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from kube_fake_api import FakeKubeApi
from sidecar_injector.cli import main
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.listing import list_pods
from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.core.staleness import StalePod, stale_pods
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.profiles.model import Profile

PROFILES = dict(builtin_profiles())


def injected_pod(
    name: str, inject: str, namespace: str = "shop", profiles: dict[str, Profile] = PROFILES, phase: str = "Running"
) -> dict[str, Any]:
    """A pod as the webhook left it: the core's patch applied, status annotation included."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {"sidecar.io/inject": inject}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    decision = decide(pod, RequestContext(namespace=namespace), profiles, InjectionPolicy())
    assert decision.outcome == "injected"
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), orjson.loads(orjson.dumps(decision.patch)))
    patched["status"] = {"phase": phase}
    return patched


def with_status(name: str, status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "annotations": {"sidecar.io/status": status}}}


def changed(profile: Profile, version: str) -> Profile:
    """The same profile, edited: a new version and one more environment variable."""
    container = dict(profile.containers[0], env=[*profile.containers[0].get("env", []), {"name": "X", "value": "1"}])
    body = profile.model_dump(by_alias=True)
    return Profile.model_validate({**body, "version": version, "containers": [container, *profile.containers[1:]]})


def test_pods_injected_with_the_current_profiles_are_not_stale():
    pods = [injected_pod("web-1", "logging,metrics"), injected_pod("web-2", "proxy")]
    assert stale_pods(pods, PROFILES) == []


def test_a_changed_profile_makes_its_pods_outdated():
    pods = [injected_pod("web-1", "logging,metrics"), injected_pod("api-1", "metrics", namespace="api")]
    old = PROFILES["metrics"]
    now = dict(PROFILES, metrics=changed(old, "9.9.9"))
    assert now["metrics"].hash != old.hash

    found = stale_pods(pods, now)

    assert found == [
        StalePod("api", "api-1", "metrics", old.version, old.hash, "9.9.9", now["metrics"].hash, "outdated"),
        StalePod("shop", "web-1", "metrics", old.version, old.hash, "9.9.9", now["metrics"].hash, "outdated"),
    ]


def _namespaced_pod(name: str, inject: str, pod_values: dict[str, str], namespace: NamespaceFacts) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "annotations": {"sidecar.io/inject": inject, **pod_values}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    decision = decide(pod, RequestContext(namespace="shop", namespace_facts=namespace), PROFILES, InjectionPolicy())
    assert decision.outcome == "injected", decision
    return jsonpatch.apply_patch(copy.deepcopy(pod), orjson.loads(orjson.dumps(decision.patch)))


def test_pods_whose_values_would_now_resolve_differently_are_reported():
    before = NamespaceFacts("shop", annotations={"git-sync.sidecar.io/period": "5m"})
    repo = {"git-sync.sidecar.io/repo": "https://github.com/acme/site"}
    follows_namespace = _namespaced_pod("web-1", "git-sync", repo, before)
    own_value = _namespaced_pod("web-2", "git-sync", {**repo, "git-sync.sidecar.io/period": "30s"}, before)
    assert stale_pods([follows_namespace, own_value], PROFILES, namespaces={"shop": before}) == []

    after = NamespaceFacts("shop", annotations={"git-sync.sidecar.io/period": "10m"})
    [found] = stale_pods([follows_namespace, own_value], PROFILES, namespaces={"shop": after})
    assert (found.pod, found.profile, found.state) == ("web-1", "git-sync", "values")
    assert found.recorded_values and found.current_values and found.recorded_values != found.current_values
    assert found.current_hash == found.recorded_hash == PROFILES["git-sync"].hash  # the profile itself is the same


def test_a_pod_whose_values_no_longer_pass_is_reported_with_invalid_values():
    namespace = NamespaceFacts("shop", annotations={"git-sync.sidecar.io/repo": "https://github.com/acme/site"})
    pod = _namespaced_pod("web-1", "git-sync", {}, namespace)
    [found] = stale_pods([pod], PROFILES, namespaces={"shop": NamespaceFacts("shop")})  # the repo default is gone
    assert found.state == "values" and found.current_values == "invalid"


def test_a_profile_that_no_longer_exists_is_reported_removed():
    pod = injected_pod("web-1", "logging,backup")
    now = {name: p for name, p in PROFILES.items() if name != "backup"}

    [found] = stale_pods([pod], now)

    assert (found.profile, found.state, found.current_version, found.current_hash) == ("backup", "removed", None, None)
    assert found.recorded_hash == PROFILES["backup"].hash


@pytest.mark.parametrize(
    "status",
    [
        "{not json",
        "[]",
        '{"profiles": []}',
        '{"no-profiles": {}}',
        "null",
        42,
    ],
)
def test_an_unreadable_status_is_skipped_with_a_note(status):
    notes: list[str] = []
    pods = [with_status("broken", status), injected_pod("web-1", "logging")]
    assert stale_pods(pods, {}, notes) == [
        StalePod("shop", "web-1", "logging", PROFILES["logging"].version, PROFILES["logging"].hash, None, None, "removed")
    ]
    assert len(notes) == 1 and notes[0].startswith("shop/broken: sidecar.io/status")


def test_a_malformed_profile_entry_is_skipped_with_a_note_and_the_others_are_checked():
    notes: list[str] = []
    status = orjson.dumps({"profiles": {"logging": "v1", "metrics": {"version": 1, "hash": None}}}).decode()
    found = stale_pods([with_status("odd", status)], PROFILES, notes)
    assert [(s.profile, s.recorded_version, s.recorded_hash, s.state) for s in found] == [
        ("metrics", None, None, "outdated")
    ]
    assert notes == ["shop/odd: sidecar.io/status entry for logging is not a map; skipped"]
    assert stale_pods([with_status("odd", status)], PROFILES) == found  # notes are optional


def test_pods_without_a_status_finished_pods_and_junk_are_ignored():
    pods: list[Any] = [
        {"metadata": {"name": "plain", "namespace": "shop"}},
        {"metadata": {"name": "no-annotations", "annotations": None}},
        injected_pod("done", "logging", phase="Succeeded"),
        injected_pod("failed", "logging", phase="Failed"),
        {"metadata": "junk"},
        {},
        "junk",
    ]
    assert stale_pods(pods, {}) == []


# -- reading the pods from the API ---------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.set_pods([injected_pod(f"web-{i}", "logging", namespace="shop" if i % 2 else "api") for i in range(5)])
        yield api


def test_list_pods_reads_every_namespace_page_by_page(fake):
    api = new_api_client(fake.configuration())

    pods = list(list_pods(api, page_size=2))

    assert [p["metadata"]["name"] for p in pods] == [f"web-{i}" for i in range(5)]
    pages = fake.received(lambda r: r.path == "/api/v1/pods")
    assert [r.query.get("limit") for r in pages] == ["2", "2", "2"]
    assert [r.query.get("continue") is None for r in pages] == [True, False, False]
    assert stale_pods(pods, {}) and all(s.state == "removed" for s in stale_pods(pods, {}))


def test_list_pods_of_one_namespace(fake):
    pods = list(list_pods(new_api_client(fake.configuration()), "shop", page_size=1))
    assert [p["metadata"]["name"] for p in pods] == ["web-1", "web-3"]
    assert len(fake.received(lambda r: r.path == "/api/v1/namespaces/shop/pods")) == 2


def test_list_pods_raises_when_the_api_is_unreachable(fake):
    api = new_api_client(fake.configuration())
    fake.go_down()
    with pytest.raises(Exception):  # noqa: B017 - urllib3's error, whatever its class
        list(list_pods(api))


# -- the command: sidecar-injector profiles stale ---------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_stale_command_compares_the_cluster_pods_with_the_webhook_configmap(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    logging_now = PROFILES["logging"]
    logging_before = changed(logging_now, "0.9")
    fake.set_pods(
        [
            injected_pod("old-web", "logging", profiles={**PROFILES, "logging": logging_before}),
            injected_pod("new-web", "logging"),
            injected_pod("metrics-web", "metrics", namespace="other"),
        ]
    )
    # the ConfigMap no longer has metrics: its pods run a removed profile
    fake.configmaps[("sidecar-injector", "sidecar-injector-profiles")] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "sidecar-injector-profiles", "namespace": "sidecar-injector"},
        "data": {"logging.yaml": yaml.safe_dump(logging_now.model_dump(by_alias=True, exclude_defaults=True))},
    }
    kubeconfig = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))
    code, out, err = run_cli(
        "profiles",
        "stale",
        "--kubeconfig",
        kubeconfig,
        "--no-builtin-profiles",
        "--configmap",
        "sidecar-injector/sidecar-injector-profiles",
    )
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "PROFILE", "STATE", "RECORDED", "CURRENT"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"old-web", "metrics-web"}
    assert rows["old-web"][3] == "outdated" and rows["old-web"][4] == "0.9"
    assert rows["metrics-web"][3] == "removed"

    code, out, _ = run_cli("profiles", "stale", "--kubeconfig", kubeconfig, "-n", "shop", "-o", "json")
    assert code == 1
    [item] = json.loads(out)
    assert (item["pod"], item["profile"], item["state"], item["recorded_version"]) == (
        "old-web",
        "logging",
        "outdated",
        "0.9",
    )


def test_stale_command_exits_0_when_every_pod_is_current(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fake.set_pods([injected_pod("web", "logging")])
    code, out, _ = run_cli("profiles", "stale", "--kubeconfig", str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    assert code == 0 and "no pod runs an outdated or removed profile" in out


@pytest.mark.parametrize("problem", ["unreachable", "no-configmap", "bad-ref"])
def test_stale_command_fails_with_a_clear_error(fake, tmp_path, monkeypatch, problem):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))
    argv = ["profiles", "stale", "--kubeconfig", kubeconfig]
    if problem == "unreachable":
        fake.go_down()
    elif problem == "no-configmap":
        argv += ["--configmap", "sidecar-injector/missing"]
    else:
        argv += ["--configmap", "just-a-name"]
    code, _, err = run_cli(*argv)
    assert code == 2
    expected = {
        "unreachable": "cannot reach the Kubernetes API",
        "no-configmap": "HTTP 404",
        "bad-ref": "expected NAMESPACE/NAME",
    }[problem]
    assert expected in err


# -- issue 20: stale compares with what live explain reads, and says so ------------------------------------


def _configmap_with(fake: FakeKubeApi, profile: Profile) -> None:
    fake.configmaps[("sidecar-injector", "sidecar-injector-profiles")] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "sidecar-injector-profiles", "namespace": "sidecar-injector"},
        "data": {f"{profile.name}.yaml": yaml.safe_dump(profile.model_dump(by_alias=True, exclude_defaults=True))},
    }


def test_stale_reads_the_charts_configmap_by_default_and_says_what_it_compared(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # the webhook runs a newer logging than this CLI ships: its pods are current, not stale
    newer = changed(PROFILES["logging"], "9.9.9")
    fake.set_pods([injected_pod("web", "logging", profiles={**PROFILES, "logging": newer})])
    _configmap_with(fake, newer)
    kubeconfig = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))

    code, out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig)

    assert code == 0, (out, err)
    assert "no pod runs an outdated or removed profile" in out
    compared = [line for line in err.splitlines() if line.startswith("compared with: ")]
    assert len(compared) == 1, err
    assert "ConfigMap sidecar-injector/sidecar-injector-profiles" in compared[0] and "logging 9.9.9" in compared[0]

    code, out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig, "--local-profiles")
    assert code == 1 and "outdated" in out, "this CLI's own logging differs"
    assert "compared with: this CLI's local profiles" in err


def test_stale_refuses_restart_when_its_source_cannot_be_read(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    newer = changed(PROFILES["logging"], "9.9.9")
    fake.set_pods([injected_pod("web", "logging", profiles={**PROFILES, "logging": newer})])
    kubeconfig = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))

    code, out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig, "--restart")

    assert code == 2 and out == ""
    assert "sidecar-injector/sidecar-injector-profiles cannot be read (HTTP 404" in err
    assert "refusing --restart" in err

    # without --restart: a listing against the local profiles, saying so
    code, out, err = run_cli("profiles", "stale", "--kubeconfig", kubeconfig)
    assert code == 1 and "outdated" in out
    assert "because ConfigMap sidecar-injector/sidecar-injector-profiles does not exist" in err
