"""Profiles: the format, strict validation naming file and field, and loading."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from mutations import paths, replaced
from sidecar_injector.profiles.checks import image_tag_problem
from sidecar_injector.profiles.loading import ProfileError, builtin_profiles, load_directory, load_profiles, parse_profiles
from sidecar_injector.profiles.model import Profile

GOOD = textwrap.dedent(
    """\
    name: shipper
    version: "1.2.0"
    description: ships logs
    containers:
      - name: shipper
        image: busybox:1.37.0
        args: [tail, -F, /logs/app.log]
        volumeMounts: [{name: logs, mountPath: /logs}]
        ports: [{containerPort: 2020, name: http}]
        resources:
          requests: {cpu: 10m, memory: 16Mi}
          limits: {cpu: 1, memory: 32Mi}
    volumes:
      - {name: logs, emptyDir: {sizeLimit: 1Gi}}
    appVolumeMounts:
      - {name: logs, mountPath: /var/log/app}
    appEnv:
      - {name: LOG_DIR, value: /var/log/app}
    podAnnotations:
      example.com/shipped: "true"
    """
)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_complete_profile_parses_with_every_part():
    (profile,) = parse_profiles(GOOD, "good.yaml")
    assert profile.name == "shipper"
    assert profile.version == "1.2.0"
    assert profile.containers[0]["args"] == ["tail", "-F", "/logs/app.log"]
    assert profile.volumes[0]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert profile.app_volume_mounts == [{"name": "logs", "mountPath": "/var/log/app"}]
    assert profile.app_env == [{"name": "LOG_DIR", "value": "/var/log/app"}]
    assert profile.pod_annotations == {"example.com/shipped": "true"}
    assert profile.native_sidecar is False


def test_container_fields_pass_through_untouched_including_rarely_used_ones():
    text = GOOD.replace(
        "    args: [tail, -F, /logs/app.log]\n",
        "    args: [tail]\n    terminationMessagePolicy: FallbackToLogsOnError\n"
        "    lifecycle: {preStop: {sleep: {seconds: 5}}}\n"
        "    resizePolicy: [{resourceName: cpu, restartPolicy: NotRequired}]\n",
    )
    (profile,) = parse_profiles(text, "x.yaml")
    container = profile.containers[0]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert container["resizePolicy"] == [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]


def test_a_numeric_version_is_kept_as_the_text_the_user_meant():
    (profile,) = parse_profiles(GOOD.replace('version: "1.2.0"', "version: 2"), "x.yaml")
    assert profile.version == "2"


def test_several_profiles_in_one_file_as_yaml_documents():
    second = GOOD.replace("name: shipper\n", "name: other\n", 1)
    profiles = parse_profiles(GOOD + "---\n" + second, "two.yaml")
    assert [p.name for p in profiles] == ["shipper", "other"]


BROKEN = [
    # (what is wrong, replacement applied to GOOD, words the error must contain)
    ("unknown top-level key", ("description:", "sidecars: []\ndescription:"), ["sidecars", "unknown field"]),
    (
        "typo in a container field",
        ("    args:", "    imagePulPolicy: Always\n    args:"),
        ["containers[0].imagePulPolicy", "unknown field"],
    ),
    (
        "typo deep in a container",
        ("ports: [{containerPort: 2020, name: http}]", "ports: [{containerPort: 2020, nmae: http}]"),
        ["containers[0].ports[0].nmae"],
    ),
    (
        "wrong type in a container",
        ("containerPort: 2020", "containerPort: '2020'"),
        ["containers[0].ports[0].containerPort", "integer"],
    ),
    ("missing image", ("    image: busybox:1.37.0\n", ""), ["containers[0].image", "required"]),
    ("image without a tag", ("busybox:1.37.0", "busybox"), ["containers[0].image", "pin"]),
    ("image on latest", ("busybox:1.37.0", "busybox:latest"), ["containers[0].image", "latest"]),
    ("bad profile name", ("name: shipper\nversion", "name: Log_Shipper\nversion"), ["name", "DNS-1123"]),
    ("bad container name", ("  - name: shipper", "  - name: Shipper_1"), ["containers[0].name", "DNS-1123"]),
    ("missing version", ('version: "1.2.0"\n', ""), ["version", "required"]),
    (
        "restartPolicy set by the profile",
        ("    args:", "    restartPolicy: Always\n    args:"),
        ["containers[0].restartPolicy", "nativeSidecar"],
    ),
    (
        "mount of an undeclared volume",
        ("{name: logs, mountPath: /logs}", "{name: nope, mountPath: /logs}"),
        ["containers[0].volumeMounts[0].name", "nope"],
    ),
    (
        "app mount of an undeclared volume",
        ("{name: logs, mountPath: /var/log/app}", "{name: x, mountPath: /v}"),
        ["appVolumeMounts[0].name", "'x'"],
    ),
    ("relative app mount path", ("mountPath: /var/log/app", "mountPath: var/log"), ["appVolumeMounts[0].mountPath"]),
    ("env value not a string", ("value: /var/log/app", "value: 3"), ["appEnv[0].value", "string"]),
    ("annotation value not a string", ('example.com/shipped: "true"', "example.com/shipped: [1]"), ["podAnnotations"]),
    ("annotation key that Kubernetes refuses", ("example.com/shipped:", "bad key!:"), ["podAnnotations", "'bad key!'"]),
    (
        "volume with an unknown source field",
        ("emptyDir: {sizeLimit: 1Gi}", "emptyDir: {size: 1Gi}"),
        ["volumes[0].emptyDir.size", "unknown field"],
    ),
]


@pytest.mark.parametrize("problem,replacement,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_profile_is_refused_with_file_and_field_named(problem, replacement, words):
    old, new = replacement
    assert old in GOOD, f"test setup: {old!r} not in GOOD"
    with pytest.raises(ProfileError) as caught:
        parse_profiles(GOOD.replace(old, new, 1), "profiles/shipper.yaml")
    message = str(caught.value)
    assert "profiles/shipper.yaml" in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_duplicates_inside_a_profile_are_refused():
    text = GOOD.replace(
        "volumes:\n",
        "  - {name: shipper, image: 'busybox:1.37.0', ports: [{containerPort: 2020}]}\nvolumes:\n"
        "  - {name: logs, emptyDir: {}}\n",
    ).replace("appEnv:\n", "appEnv:\n  - {name: LOG_DIR, value: x}\n")
    with pytest.raises(ProfileError) as caught:
        parse_profiles(text, "dup.yaml")
    message = str(caught.value)
    assert "duplicate container 'shipper'" in message
    assert "duplicate volume 'logs'" in message
    assert "port 2020/TCP is already used" in message
    assert "duplicate variable 'LOG_DIR'" in message


def test_a_profile_that_adds_nothing_is_refused():
    with pytest.raises(ProfileError, match="adds nothing"):
        parse_profiles("name: empty\nversion: '1'\n", "empty.yaml")


@pytest.mark.parametrize(
    "text,words",
    [
        ("name: [unclosed", ["not valid YAML"]),
        ("- just\n- a list\n", ["must be a mapping"]),
        ("plain string", ["must be a mapping"]),
    ],
)
def test_text_that_is_not_a_profile_is_refused_clearly(text, words):
    with pytest.raises(ProfileError) as caught:
        parse_profiles(text, "odd.yaml")
    for word in [*words, "odd.yaml"]:
        assert word in str(caught.value)


def test_every_problem_of_a_file_is_reported_not_just_the_first():
    text = GOOD.replace("busybox:1.37.0", "busybox").replace("mountPath: /var/log/app", "mountPath: rel")
    with pytest.raises(ProfileError) as caught:
        parse_profiles(text, "many.yaml")
    assert len(caught.value.problems) >= 2


@pytest.mark.parametrize(
    "image,pinned",
    [
        ("busybox:1.37.0", True),
        ("registry.k8s.io/git-sync/git-sync:v4.4.0", True),
        ("localhost:5000/app:1.0", True),
        ("localhost:5000/app", False),
        ("busybox", False),
        ("busybox:latest", False),
        ("busybox@sha256:" + "a" * 64, True),
    ],
)
def test_images_must_be_pinned(image, pinned):
    assert (image_tag_problem(image) is None) is pinned


def test_the_hash_follows_what_is_injected_not_the_description():
    (base,) = parse_profiles(GOOD, "a")
    (described,) = parse_profiles(GOOD.replace("ships logs", "ships the logs"), "a")
    (changed,) = parse_profiles(GOOD.replace("busybox:1.37.0", "busybox:1.36.1"), "a")
    assert base.hash == described.hash
    assert base.hash != changed.hash
    assert len(base.hash) == 12


def test_profiles_are_immutable_once_loaded():
    (profile,) = parse_profiles(GOOD, "a")
    with pytest.raises(ValidationError, match="frozen"):
        profile.version = "9"  # type: ignore[misc]


# -- loading from a directory -------------------------------------------------------------


def test_a_directory_loads_every_yaml_file_and_skips_hidden_and_other_files(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yml", GOOD.replace("name: shipper\n", "name: second\n", 1))
    write(tmp_path, "notes.txt", "not a profile")
    (tmp_path / "..data").mkdir()  # how a mounted ConfigMap stores its real files
    write(tmp_path / "..data", "a.yaml", "garbage: [")
    write(tmp_path, ".hidden.yaml", "garbage: [")
    profiles = load_directory(tmp_path)
    assert profiles.names() == ["second", "shipper"]
    assert profiles.sources["shipper"].endswith("a.yaml")


def test_a_broken_file_in_a_directory_names_the_file_and_field_and_loads_nothing(tmp_path):
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "bad.yaml", GOOD.replace("name: shipper\n", "name: bad\n", 1).replace("busybox:1.37.0", "busybox"))
    with pytest.raises(ProfileError) as caught:
        load_directory(tmp_path)
    assert str(tmp_path / "bad.yaml") in str(caught.value)
    assert "containers[0].image" in str(caught.value)


def test_the_same_profile_name_in_two_files_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    with pytest.raises(ProfileError, match="already defined"):
        load_directory(tmp_path)


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_directory(tmp_path / "nope")


def test_a_directory_profile_overrides_the_builtin_of_the_same_name(tmp_path):
    write(tmp_path, "logging.yaml", GOOD.replace("name: shipper\n", "name: logging\n", 1))
    profiles = load_profiles(tmp_path)
    assert profiles["logging"].description == "ships logs"
    assert profiles.sources["logging"].endswith("logging.yaml")
    assert "metrics" in profiles  # the other built-ins stay


def test_builtins_can_be_left_out(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    assert load_profiles(tmp_path, include_builtin=False).names() == ["shipper"]
    assert load_profiles(None, include_builtin=False).names() == []


def test_a_profile_object_round_trips_through_its_yaml_form():
    (profile,) = parse_profiles(GOOD, "a")
    again = Profile.model_validate(profile.model_dump(by_alias=True))
    assert again == profile and again.hash == profile.hash


def test_builtin_profiles_load():
    assert builtin_profiles().names() == sorted(
        ["backup", "cert-renewal", "config-reload", "git-sync", "logging", "metrics", "proxy", "tls"]
    )


def test_any_value_of_the_wrong_type_anywhere_is_a_profile_error_never_a_crash():
    """A deterministic type-confusion sweep: every node of a good profile, replaced by
    values of every JSON type, gives either a valid profile or a ProfileError."""
    import yaml

    good = yaml.safe_load(GOOD)
    oddities = [None, "", "text", 0, -1, 3.5, True, [], [1, "x"], {}, {"k": [None]}, [[{}]]]
    outcomes = {"valid": 0, "refused": 0}
    for path in paths(good):
        for odd in oddities:
            text = yaml.safe_dump(replaced(good, path, odd))
            try:
                parse_profiles(text, "fuzz.yaml")
                outcomes["valid"] += 1
            except ProfileError as exc:
                assert all(problem.startswith("fuzz.yaml") for problem in exc.problems)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 300 and outcomes["valid"] > 0


def test_the_kubernetes_field_table_matches_the_installed_client():
    """kube_types.json is what scripts/gen_kube_types.py extracts from the pinned client (`make kube-types`)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gen_kube_types.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_loading_profiles_does_not_import_the_kubernetes_client():
    import subprocess
    import sys

    code = (
        "import sys; from sidecar_injector.profiles.loading import builtin_profiles; builtin_profiles(); "
        "print(sorted(m for m in sys.modules if m == 'kubernetes' or m.startswith('kubernetes.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_a_kubernetes_object_in_the_servers_profiles_directory_is_one_line(tmp_path):
    """Issue 20: a SidecarProfile in the server's directory was six lines of unknown fields."""
    import yaml

    resource = {
        "apiVersion": "sidecar.io/v1alpha1",
        "kind": "SidecarProfile",
        "metadata": {"name": "audit"},
        "spec": {"version": "1", "containers": [{"name": "c", "image": "busybox:1.36.1"}]},
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(resource))
    with pytest.raises(ProfileError) as error:
        load_directory(tmp_path)
    [problem] = error.value.problems
    assert "a SidecarProfile object, not a profile" in problem and "kubectl" in problem
