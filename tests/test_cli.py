"""The ``sidecar-injector`` command line: inject, profiles, certs, settings, serve.

Almost every test calls :func:`sidecar_injector.cli.main` in-process with its own small profiles
(``--no-builtin-profiles --profiles-dir DIR``) so that it does not depend on the
built-in profiles; the ``builtin`` tests at the end use the shipped ``logging`` and
``metrics`` profiles, and two tests run the real ``python -m sidecar_injector`` in a subprocess.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from podcheck import assert_valid_pod
from sidecar_injector.cli import main
from sidecar_injector.profiles.loading import builtin_profiles, load_directory
from sidecar_injector.profiles.model import Profile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WORKLOADS = EXAMPLES / "workloads.yaml"

STATUS = "sidecar.io/status"
INJECT = "sidecar.io/inject"

#: kind -> keys from the object to its pod template (None: the object is the pod)
TEMPLATE_PATH: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

LOGGING_PROFILE = """\
name: logging
version: "1.2.0"
description: test log shipper tailing /var/log/app
volumes:
  - name: app-logs
    emptyDir: {}
containers:
  - name: log-shipper
    image: busybox:1.36.1
    args: ["sh", "-c", "tail -F /var/log/app/*.log"]
    resources:
      requests: {cpu: 5m, memory: 16Mi}
    volumeMounts:
      - name: app-logs
        mountPath: /var/log/app
        readOnly: true
appVolumeMounts:
  - name: app-logs
    mountPath: /var/log/app
"""

METRICS_PROFILE = """\
name: metrics
version: "0.3.0"
description: test statsd exporter on :9102
containers:
  - name: statsd-exporter
    image: prom/statsd-exporter:v0.26.1
    ports:
      - name: metrics
        containerPort: 9102
appEnv:
  - name: STATSD_HOST
    value: 127.0.0.1
"""


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_injector_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SIDECAR_INJECTOR_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("SIDECAR_INJECTOR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "logging.yaml").write_text(LOGGING_PROFILE)
    (directory / "metrics.yaml").write_text(METRICS_PROFILE)
    return directory


@pytest.fixture
def own(profiles_dir: Path) -> list[str]:
    """Flags that make the CLI use only the test profiles."""
    return ["--no-builtin-profiles", "--profiles-dir", str(profiles_dir)]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def docs(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def template_of(obj: dict[str, Any]) -> dict[str, Any]:
    node = obj
    for key in TEMPLATE_PATH[obj["kind"]]:
        node = node[key]
    return node


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {d["kind"]: d for d in documents}
    assert len(found) == len(documents), "the example has one object per kind"
    return found


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def as_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod the workload's controller would create from its (injected) template."""
    template = copy.deepcopy(template_of(obj))
    if obj["kind"] == "Pod":
        return template
    metadata = {**template.get("metadata", {}), "name": f"{obj['metadata']['name']}-0"}
    spec = template["spec"]
    for claim in obj["spec"].get("volumeClaimTemplates") or []:  # as the StatefulSet controller does
        claim_name = claim["metadata"]["name"]
        spec.setdefault("volumes", []).append(
            {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{metadata['name']}"}}
        )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@pytest.fixture
def workloads_in() -> list[dict[str, Any]]:
    return docs(WORKLOADS.read_text())


@pytest.fixture
def injected(own: list[str]) -> tuple[list[dict[str, Any]], str, str]:
    code, out, err = run("inject", "-f", str(WORKLOADS), *own)
    assert code == 0, err
    return docs(out), out, err


# -- inject: the example workloads ---------------------------------------------------------


def test_inject_keeps_every_document_in_its_order(injected, workloads_in):
    outputs, _, _ = injected
    assert [(d["kind"], d["metadata"]["name"]) for d in outputs] == [
        (d["kind"], d["metadata"]["name"]) for d in workloads_in
    ]
    assert len(outputs) == 9
    # keys keep their order, so the output reads like the input (apiVersion, kind, metadata, ...)
    for before, after in zip(workloads_in, outputs, strict=True):
        assert list(after) == list(before)
    assert injected[1].startswith("apiVersion: apps/v1\nkind: Deployment\n")


def test_inject_adds_sidecars_into_the_pod_template_of_each_annotated_workload(injected):
    out = by_kind(injected[0])
    assert names(out["Deployment"]["spec"]["template"]["spec"]["containers"]) == ["web", "log-shipper"]
    assert names(out["StatefulSet"]["spec"]["template"]["spec"]["containers"]) == [
        "postgres",
        "log-shipper",
        "statsd-exporter",
    ]
    assert names(out["ReplicaSet"]["spec"]["template"]["spec"]["containers"]) == ["worker", "log-shipper", "statsd-exporter"]
    assert names(out["Job"]["spec"]["template"]["spec"]["initContainers"]) == ["log-shipper"]
    assert names(out["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"]) == ["statsd-exporter"]
    # nothing lands on the workload object itself
    for kind in ("Deployment", "StatefulSet", "ReplicaSet", "Job", "CronJob"):
        assert "containers" not in out[kind]["spec"]
        assert "volumes" not in out[kind]["spec"]
        assert STATUS not in (out[kind]["metadata"].get("annotations") or {})


def test_inject_adds_profile_volumes_mounts_and_env_to_the_application_containers(injected):
    out = by_kind(injected[0])
    spec = out["StatefulSet"]["spec"]["template"]["spec"]
    assert {"name": "app-logs", "emptyDir": {}} in spec["volumes"]
    postgres = spec["containers"][0]
    assert {"name": "app-logs", "mountPath": "/var/log/app"} in postgres["volumeMounts"]
    assert postgres["volumeMounts"][0] == {"name": "data", "mountPath": "/var/lib/postgresql/data"}
    assert {"name": "STATSD_HOST", "value": "127.0.0.1"} in postgres["env"]
    assert [e["name"] for e in postgres["env"]][:2] == ["POSTGRES_PASSWORD", "PGDATA"]
    # the Job's container had no volumeMounts array at all: it is created
    job_app = out["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job_app["volumeMounts"] == [{"name": "app-logs", "mountPath": "/var/log/app"}]


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_job_pods_get_native_sidecars_so_the_job_can_complete(injected, kind):
    spec = template_of(by_kind(injected[0])[kind])["spec"]
    sidecars = spec["initContainers"]
    assert len(sidecars) == 1
    assert sidecars[0]["restartPolicy"] == "Always"
    assert names(spec["containers"]) == [names(spec["containers"])[0]]  # only the app container


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "ReplicaSet"])
def test_long_running_workloads_get_regular_sidecars(injected, kind):
    spec = template_of(by_kind(injected[0])[kind])["spec"]
    assert "initContainers" not in spec
    assert all("restartPolicy" not in c for c in spec["containers"])


@pytest.mark.parametrize("kind", ["DaemonSet", "Pod", "Service", "ConfigMap"])
def test_unannotated_opted_out_and_podless_objects_pass_through_unchanged(injected, workloads_in, kind):
    assert by_kind(injected[0])[kind] == by_kind(workloads_in)[kind]


def test_inject_writes_the_status_annotation_into_the_pod_template(injected, profiles_dir):
    loaded = load_directory(profiles_dir)
    out = by_kind(injected[0])
    status = json.loads(out["StatefulSet"]["spec"]["template"]["metadata"]["annotations"][STATUS])
    assert set(status["profiles"]) == {"logging", "metrics"}
    for name in ("logging", "metrics"):
        assert status["profiles"][name]["version"] == loaded[name].version
        assert status["profiles"][name]["hash"] == loaded[name].hash
    assert status["profiles"]["logging"]["containers"] == ["log-shipper"]
    job_status = json.loads(out["Job"]["spec"]["template"]["metadata"]["annotations"][STATUS])
    assert job_status["profiles"]["logging"]["native"] is True
    # the user's annotation is kept
    assert out["StatefulSet"]["spec"]["template"]["metadata"]["annotations"][INJECT] == "logging,metrics"


def test_inject_reports_what_it_did_per_object_on_stderr(injected):
    _, out, err = injected
    assert "Deployment/web: injected logging" in err
    assert "StatefulSet/db: injected logging, metrics" in err
    assert "Pod/debug: not injected (opted-out" in err
    assert "DaemonSet/node-agent: not injected (not-requested" in err
    assert "warning" not in err
    assert "injected" not in out.split("\n")[0]  # reports go to stderr, not into the YAML


def test_inject_is_idempotent_on_its_own_output(injected, own, tmp_path):
    _, first, _ = injected
    once = tmp_path / "once.yaml"
    once.write_text(first)
    code, second, err = run("inject", "-f", str(once), *own)
    assert code == 0, err
    assert docs(second) == docs(first)
    assert "already-injected" in err


def test_injected_pod_templates_are_valid_pods(injected):
    for obj in injected[0]:
        if obj["kind"] in TEMPLATE_PATH:
            assert_valid_pod(as_pod(obj))


@pytest.mark.parametrize("kind", sorted(TEMPLATE_PATH))
def test_every_workload_kind_gets_the_sidecar_at_its_pod_template(workloads_in, own, tmp_path, monkeypatch, kind):
    obj = copy.deepcopy(
        next(d for d in workloads_in if d["kind"] == kind)
        if kind != "Pod"
        else {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36.1"}]},
        }
    )
    template = template_of(obj)
    template.setdefault("metadata", {}).setdefault("annotations", {})[INJECT] = "metrics"
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(obj)))
    code, out, err = run("inject", "-f", "-", *own)
    assert code == 0, err
    [result] = docs(out)
    spec = template_of(result)["spec"]
    native = kind in ("Job", "CronJob")
    where = spec["initContainers"] if native else spec["containers"]
    assert "statsd-exporter" in names(where)
    assert STATUS in template_of(result)["metadata"]["annotations"]
    # everything outside the pod template is untouched
    if kind != "Pod":
        original = copy.deepcopy(obj)
        path = TEMPLATE_PATH[kind]
        parent_out, parent_in = result, original
        for key in path[:-1]:
            parent_out, parent_in = parent_out[key], parent_in[key]
        del parent_out[path[-1]], parent_in[path[-1]]
        assert result == original


# -- inject: input, output, errors ---------------------------------------------------------


def test_inject_reads_stdin_when_filename_is_dash(own, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO((EXAMPLES / "pod.yaml").read_text()))
    code, out, err = run("inject", "-f", "-", *own)
    assert code == 0, err
    [pod] = docs(out)
    assert names(pod["spec"]["containers"]) == ["app", "log-shipper", "statsd-exporter"]
    assert_valid_pod(pod)


def test_inject_writes_the_output_file_and_nothing_to_stdout(own, tmp_path):
    target = tmp_path / "out.yaml"
    code, out, err = run("inject", "-f", str(EXAMPLES / "pod.yaml"), "-o", str(target), *own)
    assert code == 0, err
    assert out == ""
    [pod] = docs(target.read_text())
    assert STATUS in pod["metadata"]["annotations"]


def test_unknown_profile_warns_exits_0_and_still_injects_the_known_ones(own, tmp_path):
    manifest = tmp_path / "pod.yaml"
    pod = yaml.safe_load((EXAMPLES / "pod.yaml").read_text())
    pod["metadata"]["annotations"][INJECT] = "logging,tracing"
    manifest.write_text(yaml.safe_dump(pod))
    code, out, err = run("inject", "-f", str(manifest), *own)
    assert code == 0
    assert "warning" in err and "tracing" in err
    assert "available: logging, metrics" in err
    [result] = docs(out)
    assert names(result["spec"]["containers"]) == ["app", "log-shipper"]


def test_unknown_profile_with_strict_exits_1_with_an_error_naming_it(own, tmp_path):
    manifest = tmp_path / "pod.yaml"
    pod = yaml.safe_load((EXAMPLES / "pod.yaml").read_text())
    pod["metadata"]["annotations"][INJECT] = "logging,tracing"
    manifest.write_text(yaml.safe_dump(pod))
    code, out, err = run("inject", "-f", str(manifest), "--strict", *own)
    assert code == 1
    assert "error" in err and "tracing" in err
    [result] = docs(out)
    assert result == pod  # a denied pod is not half-injected


def test_invalid_yaml_input_exits_2_with_a_clear_message(own, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n")
    code, out, err = run("inject", "-f", str(broken), *own)
    assert code == 2
    assert out == ""
    assert str(broken) in err and "not valid YAML" in err
    assert "Traceback" not in err


def test_unwritable_output_file_exits_2_with_a_message_not_a_traceback(own, tmp_path):
    target = tmp_path / "no-such-dir" / "out.yaml"
    code, _out, err = run("inject", "-f", str(EXAMPLES / "pod.yaml"), "-o", str(target), *own)
    assert code == 2
    assert str(target) in err and "cannot write" in err
    assert not target.exists()


def test_output_has_no_yaml_aliases_when_a_profile_touches_several_app_containers(own, monkeypatch):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "two", "annotations": {INJECT: "logging,metrics"}},
        "spec": {"containers": [{"name": "a", "image": "busybox:1.36.1"}, {"name": "b", "image": "busybox:1.36.1"}]},
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(pod)))
    code, out, err = run("inject", "-f", "-", *own)
    assert code == 0, err
    assert "&id" not in out and "*id" not in out  # plain YAML that every tool reads
    [result] = docs(out)
    for app in result["spec"]["containers"][:2]:
        assert app["volumeMounts"] == [{"name": "app-logs", "mountPath": "/var/log/app"}]
        assert app["env"] == [{"name": "STATSD_HOST", "value": "127.0.0.1"}]
    assert_valid_pod(result)


def test_missing_input_file_exits_2_naming_it(own, tmp_path):
    missing = tmp_path / "nope.yaml"
    code, out, err = run("inject", "-f", str(missing), *own)
    assert code == 2
    assert out == ""
    assert str(missing) in err and "cannot read" in err


def test_kind_list_items_are_injected_one_by_one(own, workloads_in, monkeypatch):
    listing = {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": workloads_in}
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(listing)))
    code, out, err = run("inject", "-f", "-", *own)
    assert code == 0, err
    [result] = docs(out)
    assert result["kind"] == "List"
    items = by_kind(result["items"])
    assert "log-shipper" in names(items["Deployment"]["spec"]["template"]["spec"]["containers"])
    assert names(items["Job"]["spec"]["template"]["spec"]["initContainers"]) == ["log-shipper"]
    assert items["ConfigMap"] == by_kind(workloads_in)["ConfigMap"]


# -- profiles ------------------------------------------------------------------------------


def test_profiles_list_shows_each_name_with_version_and_hash(own, profiles_dir):
    loaded = load_directory(profiles_dir)
    code, out, err = run("profiles", "list", *own)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split() == ["NAME", "VERSION", "HASH", "PARAMETERS", "SOURCE", "DESCRIPTION"]
    assert [line.split()[0] for line in lines] == ["logging", "metrics"]
    for line, name in zip(lines, ("logging", "metrics"), strict=True):
        fields = line.split()
        assert fields[1] == loaded[name].version
        assert fields[2] == loaded[name].hash


def test_profiles_show_prints_yaml_that_parses_back_to_the_same_profile(own, profiles_dir):
    code, out, err = run("profiles", "show", "logging", *own)
    assert code == 0, err
    shown = Profile.model_validate(yaml.safe_load(out))
    original = load_directory(profiles_dir)["logging"]
    assert shown == original
    assert shown.hash == original.hash


def test_profiles_show_unknown_name_exits_2_and_lists_the_available_ones(own):
    code, out, err = run("profiles", "show", "tracing", *own)
    assert code == 2
    assert out == ""
    assert "tracing" in err and "logging, metrics" in err


def test_profiles_validate_a_good_directory_exits_0(profiles_dir):
    code, out, err = run("profiles", "validate", str(profiles_dir))
    assert code == 0, err
    assert "2 valid profile(s)" in out and "logging" in out and "metrics" in out


BROKEN_PROFILES = {
    "unknown-key": (
        METRICS_PROFILE.replace("containers:", "sidecars:\n  - name: x\ncontainers:"),
        "sidecars",
    ),
    "unknown-container-key": (
        METRICS_PROFILE.replace("    ports:", "    imagePulPolicy: Always\n    ports:"),
        "containers[0].imagePulPolicy",
    ),
    "missing-image": (METRICS_PROFILE.replace("    image: prom/statsd-exporter:v0.26.1\n", ""), "containers[0].image"),
    "latest-image": (METRICS_PROFILE.replace("v0.26.1", "latest"), "containers[0].image"),
    "bad-name": (METRICS_PROFILE.replace("name: metrics\n", "name: Metrics_Exporter\n", 1), "name"),
    "invalid-yaml": ("name: metrics\ncontainers: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_PROFILES))
def test_profiles_validate_a_broken_directory_exits_1_naming_file_and_field(profiles_dir, case):
    text, field = BROKEN_PROFILES[case]
    broken = profiles_dir / "broken.yaml"
    broken.write_text(text.replace("name: metrics", "name: metrics-two"))
    code, out, err = run("profiles", "validate", str(profiles_dir))
    assert code == 1
    assert out == ""
    problem_lines = [line for line in err.splitlines() if str(broken) in line]
    assert problem_lines, err
    assert any(field in line for line in problem_lines), err
    assert "Traceback" not in err


def test_inject_with_a_broken_profiles_dir_exits_2_before_touching_anything(profiles_dir, tmp_path):
    (profiles_dir / "broken.yaml").write_text("name: x\nversion: '1'\nbogus: true\n")
    target = tmp_path / "out.yaml"
    code, _out, err = run(
        "inject", "-f", str(WORKLOADS), "-o", str(target), "--no-builtin-profiles", "--profiles-dir", str(profiles_dir)
    )
    assert code == 2
    assert "bogus" in err and "broken.yaml" in err
    assert not target.exists()


# -- certs ---------------------------------------------------------------------------------


def test_certs_generate_writes_a_ca_and_a_serving_cert_with_the_service_names(tmp_path):
    out_dir = tmp_path / "certs"
    code, out, err = run(
        "certs",
        "generate",
        "--service",
        "s",
        "--namespace",
        "ns",
        "--out",
        str(out_dir),
        "--extra-dns",
        "localhost",
        "--extra-ip",
        "127.0.0.1",
    )
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == {"ca.crt", "tls.crt", "tls.key"}
    cert = x509.load_pem_x509_certificate((out_dir / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((out_dir / "ca.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"s", "s.ns", "s.ns.svc", "s.ns.svc.cluster.local", "localhost"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cert.verify_directly_issued_by(ca)
    assert "tls.key" in out
    assert (out_dir / "tls.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("service", ["Bad_Service", "-s", "a" * 64])
def test_certs_generate_rejects_a_bad_service_name_with_exit_2(tmp_path, service):
    out_dir = tmp_path / "certs"
    code, _out, err = run("certs", "generate", f"--service={service}", "--namespace", "ns", "--out", str(out_dir))
    assert code == 2
    assert "service name" in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


# -- settings from the environment -----------------------------------------------------------


@pytest.fixture
def pod_with_unknown_profile(tmp_path: Path) -> Path:
    manifest = tmp_path / "pod.yaml"
    pod = yaml.safe_load((EXAMPLES / "pod.yaml").read_text())
    pod["metadata"]["annotations"][INJECT] = "logging,tracing"
    manifest.write_text(yaml.safe_dump(pod))
    return manifest


def test_strict_from_the_environment_makes_inject_strict(own, pod_with_unknown_profile, monkeypatch):
    monkeypatch.setenv("SIDECAR_INJECTOR_STRICT", "true")
    code, _, err = run("inject", "-f", str(pod_with_unknown_profile), *own)
    assert code == 1
    assert "tracing" in err


def test_a_flag_overrides_the_environment(own, pod_with_unknown_profile, monkeypatch):
    monkeypatch.setenv("SIDECAR_INJECTOR_STRICT", "true")
    code, out, err = run("inject", "-f", str(pod_with_unknown_profile), "--no-strict", *own)
    assert code == 0, err
    assert "log-shipper" in names(docs(out)[0]["spec"]["containers"])


def test_native_sidecars_never_from_the_environment_gives_jobs_regular_sidecars(own, monkeypatch):
    monkeypatch.setenv("SIDECAR_INJECTOR_NATIVE_SIDECARS", "never")
    code, out, err = run("inject", "-f", str(WORKLOADS), *own)
    assert code == 0, err
    job = by_kind(docs(out))["Job"]["spec"]["template"]["spec"]
    assert names(job["containers"]) == ["migrate", "log-shipper"]
    assert "initContainers" not in job
    code, out, err = run("inject", "-f", str(WORKLOADS), "--native-sidecars", "auto", *own)
    assert code == 0, err
    assert names(by_kind(docs(out))["Job"]["spec"]["template"]["spec"]["initContainers"]) == ["log-shipper"]


def test_profiles_dir_from_the_environment_is_used(profiles_dir, monkeypatch):
    monkeypatch.setenv("SIDECAR_INJECTOR_PROFILES_DIR", str(profiles_dir))
    monkeypatch.setenv("SIDECAR_INJECTOR_BUILTIN_PROFILES", "false")
    code, out, err = run("profiles", "list")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "logging", "metrics"]


def test_an_invalid_environment_value_exits_2_naming_the_setting(own, monkeypatch):
    monkeypatch.setenv("SIDECAR_INJECTOR_NATIVE_SIDECARS", "sometimes")
    code, out, err = run("inject", "-f", str(WORKLOADS), *own)
    assert code == 2
    assert out == ""
    assert "native_sidecars" in err.lower()
    assert "Traceback" not in err


# -- serve -----------------------------------------------------------------------------------


def test_serve_without_certificate_files_exits_2_and_says_how_to_create_them(own):
    code, _, err = run("serve", *own)
    assert code == 2
    assert "--cert-file" in err
    assert "certs generate" in err


def test_serve_with_missing_certificate_files_exits_2_naming_the_file(own, tmp_path):
    code, _, err = run("serve", "--cert-file", str(tmp_path / "tls.crt"), "--key-file", str(tmp_path / "tls.key"), *own)
    assert code == 2
    assert str(tmp_path / "tls.crt") in err and "not found" in err


# -- the real command --------------------------------------------------------------------------


def _python_m_app(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_INJECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar_injector", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_python_dash_m_app_injects_from_stdin_in_a_real_process(own):
    result = _python_m_app("inject", "-f", "-", *own, stdin=WORKLOADS.read_text())
    assert result.returncode == 0, result.stderr
    out = by_kind(docs(result.stdout))
    assert names(out["Job"]["spec"]["template"]["spec"]["initContainers"]) == ["log-shipper"]
    assert "Deployment/web: injected logging" in result.stderr


def test_python_dash_m_app_exit_code_reaches_the_shell(profiles_dir):
    (profiles_dir / "broken.yaml").write_text("name: broken\nversion: '1'\ncontainers: [{name: x}]\n")
    result = _python_m_app("profiles", "validate", str(profiles_dir))
    assert result.returncode == 1, "a document that is not usable: 1 (2 is a usage error)"
    assert "broken.yaml" in result.stderr and "containers[0].image" in result.stderr
    assert "Traceback" not in result.stderr


# -- the built-in profiles (they land in app/builtin_profiles/) -----------------------------------


def test_builtin_profiles_list_includes_logging_and_metrics():
    code, out, err = run("profiles", "list")
    assert code == 0, err
    listed = {line.split()[0] for line in out.splitlines()}
    assert {"logging", "metrics"} <= listed


def test_builtin_logging_and_metrics_inject_the_example_workloads_into_valid_pods(workloads_in, monkeypatch):
    code, out, err = run("inject", "-f", str(WORKLOADS))
    assert code == 0, err
    assert "warning" not in err
    result = by_kind(docs(out))
    for kind in ("Deployment", "StatefulSet", "ReplicaSet", "Job", "CronJob"):
        template = template_of(result[kind])
        assert STATUS in template["metadata"]["annotations"], kind
        assert_valid_pod(as_pod(result[kind]))
    for kind in ("Job", "CronJob"):
        spec = template_of(result[kind])["spec"]
        assert spec["initContainers"] and all(c.get("restartPolicy") == "Always" for c in spec["initContainers"])
        assert len(spec["containers"]) == 1
    deployment = template_of(result["Deployment"])["spec"]
    assert len(deployment["containers"]) > 1
    for kind in ("DaemonSet", "Pod", "Service", "ConfigMap"):
        assert result[kind] == by_kind(workloads_in)[kind]
    # idempotent with the built-ins too
    monkeypatch.setattr(sys, "stdin", io.StringIO(out))
    code, again, err = run("inject", "-f", "-")
    assert code == 0, err
    assert docs(again) == docs(out)


def test_builtin_profiles_show_round_trips():
    for name in ("logging", "metrics"):
        code, out, err = run("profiles", "show", name)
        assert code == 0, err
        shown = Profile.model_validate(yaml.safe_load(out))
        assert shown == builtin_profiles()[name]


# -- the README quick start example ------------------------------------------------------------


def test_example_admission_review_is_answered_with_a_patch_that_yields_a_valid_pod(own, profiles_dir):
    import base64

    import jsonpatch
    from fastapi.testclient import TestClient

    from sidecar_injector.profiles.loading import load_profiles
    from sidecar_injector.runtime.settings import Settings
    from sidecar_injector.webhook.app import create_app

    body = (EXAMPLES / "admission-review.json").read_text()
    request = json.loads(body)["request"]
    assert_valid_pod(request["object"])  # what the API server sends is itself a valid pod
    client = TestClient(create_app(Settings(), load_profiles(profiles_dir, include_builtin=False)))
    answer = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["uid"] == request["uid"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    pod = jsonpatch.apply_patch(request["object"], json.loads(base64.b64decode(response["patch"])))
    assert names(pod["spec"]["containers"]) == ["web", "log-shipper"]
    assert pod["metadata"]["generateName"] == "web-7d4b9c8f6d-" and "name" not in pod["metadata"]
    # the service-account token mount the API server added is kept, the profile's is added
    assert [m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]] == ["kube-api-access-x7k2p", "app-logs"]
    assert_valid_pod(pod)


def test_every_setting_has_a_serve_flag_that_overrides_the_environment(monkeypatch):
    """The contract: each SIDECAR_INJECTOR_* setting has a matching `serve` flag."""
    from sidecar_injector.cli.parser import build_parser, settings_from
    from sidecar_injector.runtime.settings import Settings

    flags = {
        "host": ("--host", "127.0.0.2", "127.0.0.2"),
        "port": ("--port", "9443", 9443),
        "cert_file": ("--cert-file", "/c.pem", Path("/c.pem")),
        "key_file": ("--key-file", "/k.pem", Path("/k.pem")),
        "profiles_dir": ("--profiles-dir", "/p", Path("/p")),
        "builtin_profiles": ("--no-builtin-profiles", None, False),
        "strict": ("--strict", None, True),
        "native_sidecars": ("--native-sidecars", "never", "never"),
        "default_profiles": ("--default-profiles", "logging, metrics", ["logging", "metrics"]),
        "namespace": ("--namespace", "injector", "injector"),
        "excluded_namespaces": ("--excluded-namespaces", "a,b", ["a", "b"]),
        "log_format": ("--log-format", "json", "json"),
        "log_level": ("--log-level", "debug", "DEBUG"),
        "max_body_bytes": ("--max-body-bytes", "4096", 4096),
        "metrics_port": ("--metrics-port", "0", 0),
        "drain_seconds": ("--drain-seconds", "1.5", 1.5),
        "shutdown_timeout_seconds": ("--shutdown-timeout-seconds", "3", 3.0),
        "cluster_wide": ("--cluster-wide", None, True),
        "namespace_lookup": ("--namespace-lookup", None, True),
        "namespace_resync_seconds": ("--namespace-resync-seconds", "60", 60.0),
        "namespace_lookup_timeout_seconds": ("--namespace-lookup-timeout-seconds", "0.5", 0.5),
        "events": ("--events", None, True),
        "reload": ("--no-reload", None, False),
        "profile_resources": ("--profile-resources", None, True),
        "namespaced_profiles": ("--no-namespaced-profiles", None, False),
        "profile_resources_sync_timeout_seconds": ("--profile-resources-sync-timeout-seconds", "5", 5.0),
        "profile_status": ("--no-profile-status", None, False),
        "profile_status_lease": ("--profile-status-lease", "my-lease", "my-lease"),
        "event_loop": ("--event-loop", "asyncio", "asyncio"),
        "memory_trim_seconds": ("--memory-trim-seconds", "0", 0.0),
        "metrics_host": ("--metrics-host", "127.0.0.3", "127.0.0.3"),
        "large_body_bytes": ("--large-body-bytes", "16384", 16384),
        "large_body_workers": ("--large-body-workers", "2", 2),
        "max_header_bytes": ("--max-header-bytes", "8192", 8192),
        "header_timeout_seconds": ("--header-timeout-seconds", "2.5", 2.5),
        "request_timeout_seconds": ("--request-timeout-seconds", "7", 7.0),
        "keep_alive_timeout_seconds": ("--keep-alive-timeout-seconds", "9", 9),
        "max_connections": ("--max-connections", "64", 64),
    }
    assert set(flags) == set(Settings.model_fields), "a setting this test does not check"
    for field, (flag, value, expected) in flags.items():
        # an environment value that the flag must override
        monkeypatch.setenv(f"SIDECAR_INJECTOR_{field.upper()}", "bogus" if field in ("host", "namespace") else "")
        argv = ["serve", flag] + ([value] if value is not None else [])
        settings = settings_from(build_parser().parse_args(argv))
        assert getattr(settings, field) == expected, field
        monkeypatch.delenv(f"SIDECAR_INJECTOR_{field.upper()}")


# -- inject: namespace labels and annotations (offline parity with automatic injection) ------

NAMESPACED_INPUT = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {sidecar.io/inject: enabled}
  annotations: {sidecar.io/profiles: metrics}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: v1
kind: Pod
metadata: {name: quiet, namespace: shop, annotations: {sidecar.io/inject: "false"}}
spec:
  containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other}
spec:
  containers: [{name: web, image: "nginx:1.27"}]
"""


def container_names_by_pod(out: str) -> dict[str, list[str]]:
    return {d["metadata"]["name"]: names(d["spec"]["containers"]) for d in docs(out) if d["kind"] == "Pod"}


def test_inject_applies_a_namespace_object_in_the_input_to_that_namespace_only(tmp_path, own):
    source = tmp_path / "in.yaml"
    source.write_text(NAMESPACED_INPUT)
    code, out, err = run("inject", "-f", str(source), *own)
    assert code == 0, err
    pods = container_names_by_pod(out)
    assert len(pods["web"]) > 1  # metrics, from the namespace annotation, without any pod annotation
    assert pods["quiet"] == ["web"]  # the pod opted out
    assert pods["elsewhere"] == ["web"]  # another namespace: not enabled
    assert "Pod/web: injected metrics" in err


def test_inject_takes_the_namespace_labels_and_annotations_from_flags(tmp_path, own):
    source = tmp_path / "pod.yaml"
    source.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: web, image: 'nginx:1.27'}]}\n"
    )
    code, _out, err = run(
        "inject",
        "-f",
        str(source),
        *own,
        "--namespace",
        "shop",
        "--namespace-label",
        "sidecar.io/inject=enabled",
        "--namespace-annotation",
        "sidecar.io/profiles=logging,metrics",
    )
    assert code == 0, err
    assert "Pod/web: injected logging, metrics" in err
    code, _out, err = run("inject", "-f", str(source), *own, "--namespace", "shop")
    assert "not injected (not-requested" in err  # without the labels: nothing automatic


def test_inject_shows_what_cluster_wide_mode_would_do(tmp_path, own):
    source = tmp_path / "pod.yaml"
    source.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n"
        "spec: {containers: [{name: web, image: 'nginx:1.27'}]}\n"
    )
    code, _, err = run("inject", "-f", str(source), *own, "--cluster-wide", "--default-profiles", "logging")
    assert code == 0 and "Pod/web: injected logging" in err
    code, _, err = run(
        "inject",
        "-f",
        str(source),
        *own,
        "--cluster-wide",
        "--default-profiles",
        "logging",
        "--namespace-label",
        "sidecar.io/inject=disabled",
    )
    assert "namespace-disabled" in err


@pytest.mark.parametrize("flag", ["--namespace-label", "--namespace-annotation"])
def test_inject_rejects_a_namespace_flag_without_a_value(tmp_path, own, flag):
    source = tmp_path / "pod.yaml"
    source.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: a, image: 'b:1'}]}\n")
    code, _, err = run("inject", "-f", str(source), *own, flag, "no-equals-sign")
    assert code == 2 and "expected KEY=VALUE" in err


def test_inject_output_is_byte_for_byte_what_the_pure_python_yaml_emitter_writes(tmp_path):
    """inject reads and writes with LibYAML's C classes; the text must not change because of it."""
    import yaml as pyyaml

    from sidecar_injector.base import yaml_io

    code, out, _err = run("inject", "-f", str(WORKLOADS))
    assert code == 0
    documents = list(pyyaml.load_all(out, Loader=pyyaml.SafeLoader))
    assert yaml_io.Dumper is not pyyaml.SafeDumper, "PyYAML was built without LibYAML: the C path is not tested"
    assert out == pyyaml.dump_all(documents, Dumper=pyyaml.SafeDumper, sort_keys=False, default_flow_style=False)


def test_offline_inject_never_imports_the_kubernetes_client(tmp_path):
    code = (
        "import io, sys; from sidecar_injector.cli import main; "
        f"main(['inject', '-f', {str(WORKLOADS)!r}], io.StringIO(), io.StringIO()); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'uvicorn', 'fastapi')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
