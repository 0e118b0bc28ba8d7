"""The offline commands with profile resources: `inject -f` and `profiles validate` take
SidecarProfile/ClusterSidecarProfile objects with the server's scoping and precedence, and
`profiles export --as-crd` turns the directory/ConfigMap profiles into ClusterSidecarProfiles."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_fake_api import FakeKubeApi
from podcheck import assert_valid_pod
from sidecar_injector.cli import main
from sidecar_injector.profiles.loading import builtin_profiles
from sidecar_injector.profiles.resources import profile_from_resource

AUDIT_SPEC = {
    "version": "1.0.0",
    "containers": [{"name": "audit-shipper", "image": "busybox:1.36.1", "args": ["sleep", "infinity"]}],
}


def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdin", io.StringIO(stdin))
            code = main(list(argv), stdout=out, stderr=err)
    else:
        code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def docs(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def tenant_profile(name: str = "audit", namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": "SidecarProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**AUDIT_SPEC, **spec},
    }


def cluster_profile(name: str = "trace", **spec: Any) -> dict[str, Any]:
    body = {**AUDIT_SPEC, "containers": [{"name": f"{name}-agent", "image": "busybox:1.36.1"}], **spec}
    return {"apiVersion": "sidecar.io/v1alpha1", "kind": "ClusterSidecarProfile", "metadata": {"name": name}, "spec": body}


def deployment(name: str, namespace: str, inject: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"sidecar.io/inject": inject}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def injected_names(obj: dict[str, Any]) -> list[str]:
    return [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]


def write(tmp_path: Path, name: str, *documents: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


# -- inject -f ----------------------------------------------------------------------------------


def test_inject_uses_a_sidecarprofile_for_its_namespace_only_and_says_why_elsewhere(tmp_path):
    manifests = write(
        tmp_path,
        "all.yaml",
        tenant_profile(),
        cluster_profile(),
        deployment("web", "shop", "audit,trace"),
        deployment("api", "other", "audit,trace"),
    )

    code, out, err = run("inject", "-f", str(manifests))

    assert code == 0, err
    profile, cluster, web, api = docs(out)
    assert profile == tenant_profile() and cluster == cluster_profile(), "profile objects pass through unchanged"
    assert injected_names(web) == ["app", "audit-shipper", "trace-agent"]
    assert injected_names(api) == ["app", "trace-agent"]
    assert (
        "warning: Deployment/api: profile audit is a SidecarProfile of namespace shop: it applies only to pods there, "
        "not to this one (namespace other)"
    ) in err
    assert "Deployment/web: injected audit, trace" in err
    for obj in (web, api):
        template = obj["spec"]["template"]
        assert_valid_pod({"apiVersion": "v1", "kind": "Pod", **template, "metadata": {**template["metadata"], "name": "p"}})


def test_inject_with_namespace_flag_scopes_sidecarprofiles_to_that_namespace(tmp_path):
    manifests = write(tmp_path, "all.yaml", tenant_profile(), deployment("web", "", "audit"))

    _code, out, _err = run("inject", "-f", str(manifests), "--namespace", "shop")
    assert injected_names(docs(out)[1]) == ["app", "audit-shipper"]

    _code, out, err = run("inject", "-f", str(manifests), "--namespace", "elsewhere")
    assert injected_names(docs(out)[1]) == ["app"]
    assert "is a SidecarProfile of namespace shop" in err


def test_inject_follows_the_no_shadowing_rule_and_says_which_resources_are_not_used(tmp_path):
    shadowing = tenant_profile("logging", version="6.6.6")
    manifests = write(tmp_path, "all.yaml", shadowing, deployment("web", "shop", "logging"))

    code, out, err = run("inject", "-f", str(manifests))

    assert code == 0, err
    web = docs(out)[1]
    status = yaml.safe_load(web["spec"]["template"]["metadata"]["annotations"]["sidecar.io/status"])
    assert status["profiles"]["logging"]["version"] == builtin_profiles()["logging"].version
    assert "warning: SidecarProfile shop/logging is not used: ShadowsClusterProfile" in err


def test_inject_without_namespaced_profiles_ignores_sidecarprofiles(tmp_path):
    manifests = write(tmp_path, "all.yaml", tenant_profile(), deployment("web", "shop", "audit"))

    code, out, err = run("inject", "-f", str(manifests), "--no-namespaced-profiles")

    assert code == 0
    assert injected_names(docs(out)[1]) == ["app"]
    assert "SidecarProfile shop/audit is not used: NamespacedProfilesDisabled" in err


def test_a_clustersidecarprofile_in_the_input_replaces_a_builtin_of_its_name(tmp_path):
    replacement = cluster_profile("logging", version="9.0.0")
    manifests = write(tmp_path, "all.yaml", replacement, deployment("web", "shop", "logging"))

    _code, out, _err = run("inject", "-f", str(manifests))

    web = docs(out)[1]
    assert injected_names(web) == ["app", "logging-agent"]


def test_profile_resources_inside_a_list_are_used_too(tmp_path):
    listing = {"apiVersion": "v1", "kind": "List", "items": [tenant_profile(), deployment("web", "shop", "audit")]}
    code, out, err = run("inject", "-f", "-", stdin=yaml.safe_dump(listing))
    assert code == 0, err
    assert injected_names(docs(out)[0]["items"][1]) == ["app", "audit-shipper"]


# -- profiles validate ------------------------------------------------------------------------------


def test_validate_a_file_mixing_plain_profiles_and_resources(tmp_path):
    plain = {"name": "billing", **AUDIT_SPEC}
    path = write(tmp_path, "mixed.yaml", plain, tenant_profile(), cluster_profile())

    code, out, err = run("profiles", "validate", str(path))

    assert code == 0, err
    assert out == f"{path}: 3 valid profile(s): billing, SidecarProfile shop/audit, ClusterSidecarProfile trace\n"


def test_validate_a_directory_with_resources(tmp_path):
    directory = tmp_path / "profiles"
    directory.mkdir()
    write(directory, "a.yaml", tenant_profile())
    write(directory, "b.yaml", {"apiVersion": "v1", "kind": "List", "items": [cluster_profile()]})

    code, out, err = run("profiles", "validate", str(directory))

    assert code == 0, err
    assert "2 valid profile(s)" in out


@pytest.mark.parametrize(
    ("documents", "problem"),
    [
        ([tenant_profile(containers=[{"name": "x", "image": "busybox"}])], "shop/audit: spec.containers[0].image"),
        ([cluster_profile("audit"), tenant_profile("audit")], "shop/audit: metadata.name: a cluster-level profile"),
        ([{"name": "audit", **AUDIT_SPEC}, tenant_profile("audit")], "the injector's profile audit"),
        ([tenant_profile("logging")], "the injector's profile logging"),
        ([tenant_profile(allowedNamespaces={"names": ["a"]})], "spec.allowedNamespaces: not allowed"),
        ([tenant_profile(), tenant_profile()], "SidecarProfile shop/audit is already defined in"),
    ],
    ids=["broken", "shadows-cluster-resource", "shadows-plain-profile", "shadows-builtin", "allowed-namespaces", "twice"],
)
def test_validate_refuses_what_the_server_would_not_accept(tmp_path, documents, problem):
    path = write(tmp_path, "profiles.yaml", *documents)

    code, out, err = run("profiles", "validate", str(path))

    assert code == 1 and out == ""
    assert problem in err and str(path) in err


def test_validate_without_builtins_lets_a_tenant_use_a_builtin_name(tmp_path):
    path = write(tmp_path, "p.yaml", tenant_profile("logging"))
    code, _out, err = run("profiles", "validate", str(path), "--no-builtin-profiles")
    assert code == 0, err


def test_validate_says_when_namespaced_profiles_are_off(tmp_path):
    path = write(tmp_path, "p.yaml", tenant_profile())
    code, _out, err = run("profiles", "validate", str(path), "--no-namespaced-profiles")
    assert code == 1 and "namespaced profiles are turned off" in err


def test_validate_a_missing_path_is_a_usage_error(tmp_path):
    code, _out, err = run("profiles", "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file or directory" in err


# -- profiles export --------------------------------------------------------------------------------------


def test_export_as_crd_turns_every_profile_into_a_clustersidecarprofile_that_validates(tmp_path):
    code, out, err = run("profiles", "export", "--as-crd")

    assert code == 0, err
    exported = docs(out)
    assert [d["metadata"]["name"] for d in exported] == sorted(builtin_profiles())
    assert {d["kind"] for d in exported} == {"ClusterSidecarProfile"}
    for doc in exported:
        assert profile_from_resource(doc) == builtin_profiles()[doc["metadata"]["name"]]
    path = tmp_path / "exported.yaml"
    path.write_text(out)
    code, out, err = run("profiles", "validate", str(path), "--no-builtin-profiles")
    assert code == 0, err
    assert f"{len(exported)} valid profile(s)" in out


def test_export_of_chosen_profiles_from_a_directory(tmp_path):
    directory = tmp_path / "profiles"
    directory.mkdir()
    write(directory, "billing.yaml", {"name": "billing", **AUDIT_SPEC})

    code, out, err = run("profiles", "export", "billing", "--as-crd", "--profiles-dir", str(directory))

    assert code == 0, err
    [doc] = docs(out)
    assert doc == {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": "ClusterSidecarProfile",
        "metadata": {"name": "billing"},
        "spec": AUDIT_SPEC,
    }
    code, out, _ = run("profiles", "export", "billing", "--profiles-dir", str(directory))
    assert docs(out) == [{"name": "billing", **AUDIT_SPEC}], "without --as-crd: the profile file format"


def test_export_from_the_webhooks_configmap(tmp_path):
    with FakeKubeApi() as fake:
        fake.configmaps[("sidecar-injector", "sidecar-injector-profiles")] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sidecar-injector-profiles", "namespace": "sidecar-injector"},
            "data": {"billing.yaml": yaml.safe_dump({"name": "billing", **AUDIT_SPEC})},
        }
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        code, out, err = run(
            "profiles", "export", "--as-crd", "--configmap", "sidecar-injector/sidecar-injector-profiles",
            "--kubeconfig", str(kubeconfig), "-o", str(tmp_path / "out.yaml"),
        )  # fmt: skip
    assert code == 0, err and out == ""
    [doc] = docs((tmp_path / "out.yaml").read_text())
    assert doc["metadata"] == {"name": "billing"} and doc["spec"] == AUDIT_SPEC


def test_export_of_an_unknown_profile_is_a_usage_error():
    code, _out, err = run("profiles", "export", "nope")
    assert code == 2 and "unknown profile(s) nope" in err


# -- explain: the same resolution (it shares inject's path) ----------------------------------------------


def test_explain_resolves_profile_resources_in_its_input_like_inject(tmp_path):
    manifests = write(
        tmp_path, "all.yaml", tenant_profile(), deployment("web", "shop", "audit"), deployment("api", "other", "audit")
    )

    code, out, err = run("explain", "-f", str(manifests), "-o", "json")

    assert code == 0, err
    web, api = json.loads(out)
    assert web["decision"] == "injected" and web["injected"] == ["audit"]
    assert api["decision"] == "skipped"
    assert any("audit is a SidecarProfile of namespace shop" in w for w in api["warnings"])


def test_live_explain_uses_the_clusters_profile_resources(tmp_path):
    with FakeKubeApi() as fake:
        fake.add_namespace("shop")
        fake.configmaps[("sidecar-injector", "sidecar-injector-profiles")] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sidecar-injector-profiles", "namespace": "sidecar-injector"},
            "data": {},
        }
        fake.put_object("apps/v1/deployments", deployment("web", "shop", "audit,trace"))
        fake.put_object("sidecar.io/v1alpha1/sidecarprofiles", tenant_profile())
        fake.put_object("sidecar.io/v1alpha1/sidecarprofiles", tenant_profile("other-tenant", "elsewhere"))
        fake.put_object("sidecar.io/v1alpha1/clustersidecarprofiles", cluster_profile())
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")

        code, out, err = run("explain", "deployment/web", "-n", "shop", "--kubeconfig", str(kubeconfig), "-o", "json")

        assert code == 0, err
        [web] = json.loads(out)
        assert web["injected"] == ["audit", "trace"]
        listed = {r.path for r in fake.received(lambda r: "sidecarprofiles" in r.path)}
        assert listed == {
            "/apis/sidecar.io/v1alpha1/clustersidecarprofiles",
            "/apis/sidecar.io/v1alpha1/namespaces/shop/sidecarprofiles",
        }, "only the object's namespace's SidecarProfiles are read"

        fake.crds_installed = False
        code, out, err = run("explain", "deployment/web", "-n", "shop", "--kubeconfig", str(kubeconfig), "-o", "json")
        assert code == 0 and json.loads(out)[0]["decision"] == "skipped"
        assert "note: no ClusterSidecarProfile resources: the clustersidecarprofiles.sidecar.io CRD is not installed" in err
