"""Issue 20: the offline tools accept what the cluster accepts, and pipelines can gate on them.

* a SidecarProfile without ``metadata.namespace`` takes ``--namespace``, else ``default`` (as
  ``kubectl apply``), in ``profiles validate``, ``inject -f`` and ``--profiles-dir``; never dropped;
* ``--profiles-dir``, ``profiles list/show/validate`` and ``inject/explain -f`` take the same documents;
* ``profiles validate`` skips other objects with a note and exits 1 on a document it cannot use;
  a misspelt kind or a version the API server does not serve is one line with a did-you-mean;
* ``inject``/``explain --fail-on skipped|warning``;
* ``explain`` says "injected: ..." and where each profile came from; ``profiles list`` has a header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from test_cli_profile_resources import AUDIT_SPEC, cluster_profile, deployment, docs, injected_names, run, write


def unplaced_profile(name: str = "audit") -> dict[str, Any]:
    """A SidecarProfile as most people write it before ``kubectl apply -n shop``: no namespace."""
    return {"apiVersion": "sidecar.io/v1alpha1", "kind": "SidecarProfile", "metadata": {"name": name}, "spec": AUDIT_SPEC}


BILLING = {
    "name": "billing",
    "version": "1.0.0",
    "containers": [{"name": "billing-agent", "image": "busybox:1.36.1", "args": ["sleep", "infinity"]}],
}


def unplaced_deployment(name: str, inject: str) -> dict[str, Any]:
    obj = deployment(name, "x", inject)
    del obj["metadata"]["namespace"]
    return obj


# -- a SidecarProfile without a namespace -------------------------------------------------------------


def test_validate_places_a_sidecarprofile_without_namespace_in_default_or_the_flag(tmp_path):
    path = write(tmp_path, "p.yaml", unplaced_profile())

    code, out, err = run("profiles", "validate", str(path))
    assert code == 0, err
    assert out == f"{path}: 1 valid profile(s): SidecarProfile default/audit\n"

    code, out, err = run("profiles", "validate", str(path), "--namespace", "shop")
    assert code == 0, err
    assert out == f"{path}: 1 valid profile(s): SidecarProfile shop/audit\n"


def test_inject_uses_a_sidecarprofile_without_namespace_from_another_file(tmp_path):
    profile = write(tmp_path, "p.yaml", unplaced_profile())
    workload = write(tmp_path, "deploy.yaml", unplaced_deployment("web", "audit"))

    code, out, err = run("inject", "-f", str(profile), "-f", str(workload))
    assert code == 0, err
    assert "unknown sidecar profile" not in err
    assert injected_names(docs(out)[1]) == ["app", "audit-shipper"]

    code, out, err = run("inject", "-f", str(profile), "-f", str(workload), "--namespace", "shop")
    assert code == 0, err
    assert injected_names(docs(out)[1]) == ["app", "audit-shipper"], "both created in shop"


def test_a_sidecarprofile_without_namespace_does_not_reach_other_namespaces(tmp_path):
    manifests = write(tmp_path, "all.yaml", unplaced_profile(), deployment("api", "other", "audit"))
    code, out, err = run("inject", "-f", str(manifests))
    assert code == 0, err
    assert injected_names(docs(out)[1]) == ["app"]
    assert "profile audit is a SidecarProfile of namespace default" in err


# -- --profiles-dir takes what profiles validate takes ------------------------------------------------------


@pytest.fixture
def resource_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir()
    write(directory, "tenant.yaml", unplaced_profile())
    write(directory, "cluster.yaml", cluster_profile())
    write(directory, "plain.yaml", BILLING)
    return directory


def test_profiles_dir_with_profile_resources_is_used_by_inject(resource_dir, tmp_path):
    workload = write(tmp_path, "deploy.yaml", unplaced_deployment("web", "audit,trace,billing"))

    code, out, err = run("inject", "-f", str(workload), "--no-builtin-profiles", "--profiles-dir", str(resource_dir))

    assert code == 0, err
    assert "required field is missing" not in err and "unknown field" not in err
    assert sorted(injected_names(docs(out)[0])) == ["app", "audit-shipper", "billing-agent", "trace-agent"]
    status = json.loads(docs(out)[0]["spec"]["template"]["metadata"]["annotations"]["sidecar.io/status"])
    assert sorted(status["profiles"]) == ["audit", "billing", "trace"]


def test_profiles_list_and_show_include_the_directorys_resources(resource_dir):
    own = ("--no-builtin-profiles", "--profiles-dir", str(resource_dir))
    code, out, err = run("profiles", "list", *own)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["NAME", "VERSION", "HASH"]
    assert [row.split()[0] for row in rows] == ["billing", "trace", "default/audit"]
    assert "ClusterSidecarProfile trace" in out and "SidecarProfile default/audit" in out

    code, out, err = run("profiles", "show", "audit", *own)
    assert code == 0, err
    assert out.startswith("# source: SidecarProfile default/audit") and "name: audit" in out
    code, out, err = run("profiles", "show", "default/audit", *own)
    assert code == 0 and "audit-shipper" in out


# -- validate: other objects, misspelt kinds, versions that do not exist ---------------------------------------


def test_validate_skips_a_deployment_next_to_its_profile_with_a_note(tmp_path):
    path = write(tmp_path, "mixed.yaml", BILLING, deployment("web", "shop", "billing"))

    code, out, err = run("profiles", "validate", str(path))

    assert code == 0, err
    assert out == f"{path}: 1 valid profile(s): billing\n"
    assert err == f"note: {path} (document 2): Deployment/web is not a profile: skipped\n"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"kind": "SidecarProfil"},
            (
                'unknown kind "SidecarProfil" in version "sidecar.io/v1alpha1" (not a profile); did you mean kind: '
                "SidecarProfile?"
            ),
        ),
        (
            {"apiVersion": "sidecar.io/v1"},
            (
                'SidecarProfile: no matches for kind "SidecarProfile" in version "sidecar.io/v1" (the API server '
                "would refuse it); did you mean apiVersion: sidecar.io/v1alpha1?"
            ),
        ),
        ({"kind": "Profile"}, 'unknown kind "Profile" in version "sidecar.io/v1alpha1"'),
    ],
    ids=["kind-typo", "wrong-version", "unknown-kind"],
)
def test_validate_refuses_what_the_api_server_refuses_in_one_line(tmp_path, change, expected):
    path = write(tmp_path, "p.yaml", {**unplaced_profile(), **change})

    code, out, err = run("profiles", "validate", str(path))

    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if str(path) in line]
    assert len(lines) == 1, err
    assert expected in lines[0]


def test_inject_does_not_use_a_profile_of_a_version_that_does_not_exist(tmp_path):
    wrong = {**cluster_profile(), "apiVersion": "sidecar.io/v1"}
    manifests = write(tmp_path, "all.yaml", wrong, deployment("web", "shop", "trace"))

    code, out, err = run("inject", "-f", str(manifests), "--no-builtin-profiles")

    assert code == 0, err
    assert injected_names(docs(out)[1]) == ["app"]
    assert 'warning: ClusterSidecarProfile: no matches for kind "ClusterSidecarProfile" in version "sidecar.io/v1"' in err


def test_profiles_dir_with_a_misspelt_kind_is_one_line(tmp_path):
    directory = tmp_path / "profiles"
    directory.mkdir()
    write(directory, "p.yaml", {**unplaced_profile(), "kind": "SidecarProfil"})
    code, _out, err = run("profiles", "list", "--profiles-dir", str(directory))
    assert code == 2
    assert "did you mean kind: SidecarProfile?" in err
    assert "required field is missing" not in err and "unknown field" not in err


# -- --fail-on ---------------------------------------------------------------------------------------------


def test_fail_on_skipped_and_warning(tmp_path):
    profiles = tmp_path / "dir"
    profiles.mkdir()
    write(profiles, "billing.yaml", BILLING)
    own = ("--no-builtin-profiles", "--profiles-dir", str(profiles))
    only_workload = write(tmp_path, "w.yaml", deployment("web", "shop", "billing,nosuch"))
    good_workload = write(tmp_path, "g.yaml", deployment("ok", "shop", "billing"))

    for command in ("inject", "explain"):
        assert run(command, "-f", str(only_workload), *own)[0] == 0, "the default stays: exit 0"
        assert run(command, "-f", str(only_workload), *own, "--fail-on", "skipped")[0] == 1
        assert run(command, "-f", str(only_workload), *own, "--fail-on", "warning")[0] == 1
        assert run(command, "-f", str(good_workload), *own, "--fail-on", "warning")[0] == 0


def test_fail_on_warning_counts_an_unused_profile_resource(tmp_path):
    broken = {**cluster_profile(), "spec": {"version": "1"}}
    manifests = write(tmp_path, "all.yaml", broken, deployment("ok", "shop", "logging"))
    assert run("inject", "-f", str(manifests), "--fail-on", "skipped")[0] == 0
    code, _out, err = run("inject", "-f", str(manifests), "--fail-on", "warning")
    assert code == 1 and "ClusterSidecarProfile trace is not used" in err


# -- explain reads naturally ------------------------------------------------------------------------------------


def test_explain_says_where_each_profile_came_from(resource_dir, tmp_path):
    workload = write(tmp_path, "deploy.yaml", unplaced_deployment("web", "audit,trace"))
    code, out, err = run("explain", "-f", str(workload), "--profiles-dir", str(resource_dir), "-o", "json")
    assert code == 0, err
    [body] = json.loads(out)
    assert body["profiles"]["audit"]["source"] == "SidecarProfile default/audit"
    assert body["profiles"]["trace"]["source"] == "ClusterSidecarProfile trace"
    assert body["profiles"]["audit"]["version"] == "1.0.0"

    code, out, err = run("explain", "-f", str(workload), "--profiles-dir", str(resource_dir))
    assert "  injected: audit, trace\n" in out
    assert "  profile audit: injected  (version 1.0.0, from SidecarProfile default/audit)\n" in out


def test_show_an_unknown_profile_suggests_the_closest_name():
    code, _out, err = run("profiles", "show", "gitsync")
    assert code == 2 and "did you mean git-sync?" in err


def test_an_undeclared_placeholder_in_a_sidecarprofile_names_its_field(tmp_path):
    spec = {
        "version": "1",
        "parameters": {"repo": {"type": "string", "default": "https://example.com/r"}},
        "containers": [{"name": "c", "image": "busybox:1.36.1", "args": ["sync", "{{ params.repp }}", "{{ params.repo }}"]}],
    }
    obj = {**unplaced_profile("sync"), "spec": spec}
    path = write(tmp_path, "p.yaml", obj)
    code, _out, err = run("profiles", "validate", str(path))
    assert code == 1
    assert (
        "spec.containers[0].args[1]: placeholder params.repp: no parameter repp is declared; did you mean params.repo?"
    ) in err
