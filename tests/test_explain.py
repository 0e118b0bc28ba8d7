"""``sidecar-injector explain``: the decision, warnings, values with their sources, and what is added."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sidecar_injector.cli import main
from test_parameters import PROFILES_YAML

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata:
  name: web
  annotations: {git-sync.sidecar.io/period: 5m}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: site, namespace: web}
spec:
  selector: {matchLabels: {app: site}}
  template:
    metadata:
      labels: {app: site, team: blue}
      annotations:
        sidecar.io/inject: git-sync,mesh
        git-sync.sidecar.io/repo: https://github.com/acme/site
        git-sync.sidecar.io/perod: 30s
    spec:
      containers: [{name: site, image: "nginx:1.27.3"}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: report, namespace: web}
spec:
  template:
    metadata:
      annotations: {sidecar.io/inject: git-sync}
    spec:
      restartPolicy: Never
      containers: [{name: report, image: "busybox:1.37.0"}]
---
apiVersion: v1
kind: Service
metadata: {name: site, namespace: web}
spec: {ports: [{port: 80}]}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, list[str]]:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test.yaml").write_text(PROFILES_YAML, encoding="utf-8")
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(MANIFESTS, encoding="utf-8")
    return manifests, ["--no-builtin-profiles", "--profiles-dir", str(profiles)]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_explain_reports_each_value_with_where_it_came_from(files):
    manifests, own = files
    code, out, _err = run("explain", "-f", str(manifests), *own, "-o", "json")
    assert code == 0
    site, report = json.loads(out)
    assert site["object"] == "Deployment/site" and site["namespace"] == "web"
    assert site["decision"] == "injected" and site["injected"] == ["git-sync", "mesh"]
    values = site["profiles"]["git-sync"]["values"]
    assert values["repo"] == {"value": "https://github.com/acme/site", "from": "pod"}
    assert values["period"] == {"value": "5m", "from": "namespace"}  # the Namespace object in the input
    assert values["port"] == {"value": "8080", "from": "default"}
    assert any(
        "git-sync.sidecar.io/perod on the pod is not a parameter" in w and "did you mean period?" in w
        for w in site["warnings"]
    )
    adds = site["adds"]
    assert adds["containers"] == ["sidecar-git-sync"]
    assert adds["nativeSidecars"] == ["mesh-proxy"] and adds["initContainers"] == ["mesh-init"]
    assert adds["volumes"] == ["content"] and adds["imagePullSecrets"] == ["registry-creds"]
    assert adds["mounts"] == {"site": ["/srv/content (content)"]}
    assert "sidecar.io/status" in adds["annotations"]
    # the Job's pod: the required repo is missing there
    assert report["decision"] == "skipped" and report["reason"] == "invalid-values"
    assert report["profiles"]["git-sync"]["problems"] == [
        "git-sync.sidecar.io/repo is required (Git repository to sync (https:// or ssh://))"
    ]


def test_explain_text_output_reads_as_a_report(files):
    manifests, own = files
    code, out, _err = run("explain", "-f", str(manifests), *own)
    assert code == 0
    assert "Deployment/site (namespace web)\n  injected: git-sync, mesh\n" in out
    assert "decision:" not in out and "(injected)" not in out, "said once, in words"
    assert f"  profile git-sync: injected  (version 2.0.0, from {manifests.parent / 'profiles' / 'test.yaml'})\n" in out
    assert "    period = 5m  (from the namespace)\n" in out
    assert "    native sidecars: mesh-proxy\n" in out
    assert "Job/report (namespace web)\n  not injected (invalid-values): " in out
    assert "    problem: git-sync.sidecar.io/repo is required" in out
    assert "Service" not in out


def test_explain_uses_the_namespace_flags_like_inject(files, tmp_path):
    _manifests, own = files
    lone = tmp_path / "lone.yaml"
    lone.write_text(MANIFESTS.split("---", 2)[1], encoding="utf-8")  # the Deployment only
    code, out, _err = run(
        "explain", "-f", str(lone), *own, "--namespace-annotation", "git-sync.sidecar.io/period=10m", "-o", "json"
    )
    assert code == 0
    [site] = json.loads(out)
    assert site["profiles"]["git-sync"]["values"]["period"] == {"value": "10m", "from": "namespace"}


def test_explain_needs_exactly_one_of_a_file_and_a_live_object(files):
    manifests, own = files
    assert run("explain", *own)[0] == 2
    code, _out, err = run("explain", "deployment/site", "-f", str(manifests), *own)
    assert code == 2 and "either -f FILE" in err
    code, _out, err = run("explain", "gizmo/site", *own)
    assert code == 2 and "expected KIND/NAME" in err


def test_offline_pods_know_their_future_owner(tmp_path):
    profile = tmp_path / "p"
    profile.mkdir()
    (profile / "owner.yaml").write_text(
        'name: owner\nversion: "1"\nappEnv: [{name: OWNER, value: "{{ pod.ownerKind }}/{{ pod.ownerName }}"}]\n',
        encoding="utf-8",
    )
    template = (
        "    metadata: {annotations: {sidecar.io/inject: owner}}\n"
        "    spec: {containers: [{name: c, image: 'busybox:1.37.0'}], restartPolicy: %s}\n"
    )
    docs = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n"
        + template % "Always"
        + "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: app}\nspec:\n  template:\n"
        + template % "Always"
        + "---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: app}\nspec:\n  template:\n"
        + template % "Never"
        + "---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: app}\nspec:\n  jobTemplate:\n    spec:\n"
        "      template:\n" + "\n".join("    " + line for line in (template % "Never").splitlines()) + "\n"
    )
    source = tmp_path / "w.yaml"
    source.write_text(docs, encoding="utf-8")
    code, out, err = run("inject", "-f", str(source), "--no-builtin-profiles", "--profiles-dir", str(profile))
    assert code == 0, err
    import yaml

    owners = []
    for doc in yaml.safe_load_all(out):
        template = doc["spec"]["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else doc["spec"]["template"]
        owners.append(template["spec"]["containers"][0]["env"][0]["value"])
    # the pods' real owners: a ReplicaSet or a Job whose names the controllers generate
    assert owners == ["ReplicaSet/", "StatefulSet/app", "Job/app", "Job/"]


def test_live_explain_reads_the_object_its_namespace_and_the_webhooks_profiles(tmp_path):
    """explain KIND/NAME against a (fake) API server: the same report as offline, values from the
    live namespace's annotations, profiles from the chart's ConfigMap."""
    import yaml

    from kube_fake_api import FakeKubeApi

    documents = list(yaml.safe_load_all(MANIFESTS))
    deployment = documents[1]
    with FakeKubeApi() as fake:
        fake.add_namespace("web", annotations={"git-sync.sidecar.io/period": "15m"})
        fake.configmaps[("sidecar-injector", "sidecar-injector-profiles")] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sidecar-injector-profiles", "namespace": "sidecar-injector"},
            "data": {"test.yaml": PROFILES_YAML},
        }
        fake.put_object("apps/v1/deployments", deployment)
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        live = ("--kubeconfig", str(kubeconfig), "--no-builtin-profiles")

        code, out, err = run("explain", "deploy/site", "-n", "web", *live, "-o", "json")
        assert code == 0, err
        [site] = json.loads(out)
        assert site["object"] == "Deployment/site" and site["injected"] == ["git-sync", "mesh"]
        values = site["profiles"]["git-sync"]["values"]
        assert values["period"] == {"value": "15m", "from": "namespace"}
        assert values["repo"]["from"] == "pod" and values["port"] == {"value": "8080", "from": "default"}

        code, _out, err = run("explain", "deployment/nope", "-n", "web", *live)
        assert code == 2 and "Deployment/nope in namespace web: HTTP 404" in err
