"""The documentation stays true: the front page stays short and says what works, the settings
reference is what the settings model generates, links lead somewhere, and every setting the
docs and the chart name exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from sidecar_injector.cli.parser import build_parser
from sidecar_injector.runtime.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHART = ROOT / "charts" / "sidecar-injector"
#: the pages people read, for the link and setting-name checks
PAGES = sorted([README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md"), ROOT / "bench" / "README.md"])
README_LIMIT = 12 * 1024


def _generator():
    spec = importlib.util.spec_from_file_location("gen_settings_doc", ROOT / "scripts" / "gen_settings_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_a_front_page_of_at_most_12_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes: move reference material into docs/ (limit {README_LIMIT})"


def test_the_readme_quick_start_is_make_run_and_make_test_and_ci_runs_make_test():
    readme = README.read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.search(r"```sh\n(.*?)```", quick, re.DOTALL)
    assert commands is not None
    assert [line.split("#")[0].strip() for line in commands.group(1).splitlines()] == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^run: .*dev-certs", makefile, re.MULTILINE), "make run serves with the dev certificates"
    assert re.search(r"^test: lint", makefile, re.MULTILINE), "make test lints first"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_every_docs_page_is_listed_in_the_docs_index():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


def test_the_settings_reference_is_what_the_settings_model_generates():
    generator = _generator()
    page = generator.DOC.read_text(encoding="utf-8")
    assert generator.render(page) == page, (
        "docs/configuration.md is out of date with the settings model (app/sidecar_injector/runtime/settings.py): "
        "run `make docs` and commit the result"
    )


def test_the_settings_reference_has_a_row_per_setting_with_its_flag_default_and_description():
    table = _generator().settings_table()
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()[2:]}
    assert set(rows) == {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    strict = rows["SIDECAR_INJECTOR_STRICT"]
    assert "`--strict` / `--no-strict`" in strict and "`false`" in strict and "boolean" in strict
    assert "serve, inject" in strict
    port = rows["SIDECAR_INJECTOR_PORT"]
    assert "integer, 1–65535" in port and "`8443`" in port and "HTTPS port" in port
    assert "one of `json`, `text`" in rows["SIDECAR_INJECTOR_LOG_FORMAT"]
    # `certs generate --namespace` is the Service's namespace, not the setting
    assert "certs generate" not in rows["SIDECAR_INJECTOR_NAMESPACE"]
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description (it is its --help and its docs)"
        assert field.description in rows[f"{ENV_PREFIX}{name.upper()}"]


def test_every_command_is_in_the_commands_table():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table = page.split("## Commands", 1)[1].split("\n## ", 1)[0]
    documented = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    for words in _generator()._commands(build_parser()):
        if words != ("certs",) and words != ("profiles",):  # groups: their actions are the rows
            assert any(f"`{' '.join(words)}" in cell or f"/ `{words[-1]}" in cell for cell in documented), (
                f"`sidecar-injector {' '.join(words)}` is not in the commands table of docs/configuration.md"
            )


def test_the_generator_refuses_a_page_without_its_markers():
    generator = _generator()
    with pytest.raises(SystemExit, match="expected one"):
        generator.render("# Configuration\n\nno markers here\n")


_ENV = re.compile(rf"\b{ENV_PREFIX}([A-Z][A-Z0-9_]*[A-Z0-9])\b")


@pytest.mark.parametrize("path", [*PAGES, *sorted(CHART.rglob("*.yaml")), CHART / "templates" / "NOTES.txt"], ids=str)
def test_every_setting_the_docs_and_the_chart_name_exists(path):
    names = set(_ENV.findall(path.read_text(encoding="utf-8")))
    unknown = sorted(f"{ENV_PREFIX}{name}" for name in names if name.lower() not in Settings.model_fields)
    assert not unknown, f"{path.relative_to(ROOT)} names settings that do not exist: {unknown}"


def _chart_env() -> dict[str, set[str]]:
    """SIDECAR_INJECTOR_* variable -> the chart values its template reads (or its literal value)."""
    lines = (CHART / "templates" / "webhook-deployment.yaml").read_text(encoding="utf-8").splitlines()
    env: dict[str, set[str]] = {}
    for i, line in enumerate(lines):
        found = re.match(rf"(\s*)- name: ({ENV_PREFIX}\w+)$", line)
        if not found:
            continue
        indent, body = len(found.group(1)), []
        for following in lines[i + 1 :]:
            if len(following) - len(following.lstrip()) <= indent:
                break  # the next list item, or the end of env:
            body.append(following)
        text = "\n".join(body)
        values = set(re.findall(r"\.Values\.([\w.]+)", text)) or set(re.findall(r'include "([\w.-]+)"', text))
        if not values:
            literal = re.search(r"value: \"?([^\"\n]+)\"?", text)
            field = re.search(r"fieldPath: ([\w.]+)", text)
            if literal:
                values = {literal.group(1)}
            elif field and field.group(1) != "metadata.namespace":
                values = {field.group(1)}
            else:
                values = {"the release namespace"}
        env[found.group(2)] = values
    return env


def test_the_configuration_page_says_which_chart_value_sets_each_setting():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    section = page.split("## What the chart sets", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    env = _chart_env()
    assert len(env) >= 15, env
    for name, values in env.items():
        [row] = [r for r in rows if f"`{name}`" in r.split("|")[1]]
        source = row.split("|")[2]
        for value in values:
            assert value in source, f"{name}: the chart sets it from {value}; the page says {source}"
    documented = {n for r in rows for n in re.findall(rf"`({ENV_PREFIX}\w+)`", r.split("|")[1])}
    assert documented == set(env), "the table lists exactly the variables the chart sets"


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans: patterns like [a-z](...) are not links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


# -- the YAML examples pass the tools they are for (issue 20) ---------------------------------------------

#: the kinds of workload whose pods get sidecars
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


def _yaml_blocks() -> list[tuple[str, str]]:
    """(page:line, text) of every ```yaml block of README.md and docs/."""
    found = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def _example_role(documents: list[object]) -> str | None:
    """What an example is: "profile" (plain, SidecarProfile, ClusterSidecarProfile), "workload"
    (an object with pods, or the pod metadata a workload carries), or None (chart values, a status)."""
    first = documents[0] if documents else None
    if not isinstance(first, dict):
        return None
    if first.get("kind") in ("SidecarProfile", "ClusterSidecarProfile") or ("name" in first and "version" in first):
        return "profile"
    if first.get("kind") in WORKLOAD_KINDS:
        return "workload"
    if set(first) == {"metadata"} and "sidecar.io/inject" in (first["metadata"].get("annotations") or {}):
        return "workload"
    return None


def _examples() -> list[tuple[str, str, str]]:
    import yaml

    examples = []
    for where, text in _yaml_blocks():
        role = _example_role([d for d in yaml.safe_load_all(text) if d is not None])
        if role is not None:
            examples.append((where, role, text))
    return examples


def test_the_docs_have_profile_and_workload_examples_to_check():
    roles = [role for _where, role, _text in _examples()]
    assert roles.count("profile") >= 4 and roles.count("workload") >= 4, roles


@pytest.mark.parametrize(("where", "role", "text"), _examples(), ids=[e[0] for e in _examples()])
def test_every_profile_and_workload_example_passes_the_tools(where, role, text, tmp_path):
    """A profile example passes `profiles validate`; a workload example (or the pod metadata of
    one) is injected with every profile it asks for and no warning (`inject --fail-on warning`)."""
    import io

    import yaml

    from sidecar_injector.cli import main

    path = tmp_path / "example.yaml"
    if role == "profile":
        path.write_text(text, encoding="utf-8")
        argv = ["profiles", "validate", str(path)]
    else:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        if set(documents[0]) == {"metadata"}:  # the annotations of a pod (template): as a Pod
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "example", **documents[0]["metadata"]},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/example/app:1.0.0"}]},
            }
            documents = [pod]
        path.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
        argv = ["inject", "-f", str(path), "--fail-on", "warning"]
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    assert code == 0, f"{where}: `sidecar-injector {' '.join(argv[:2])}` says:\n{err.getvalue()}"
    assert "warning" not in err.getvalue(), f"{where}:\n{err.getvalue()}"


def test_the_docs_say_what_a_clashing_mount_does():
    """A pod that already mounts a built-in profile's path loses that whole profile, not one mount."""
    import io

    import yaml

    from sidecar_injector.cli import main

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"sidecar.io/inject": "logging,metrics"}},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "ghcr.io/example/web:1.4.2",
                    "volumeMounts": [{"name": "own", "mountPath": "/var/log/app"}],
                }
            ],
            "volumes": [{"name": "own", "emptyDir": {}}],
        },
    }
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(pod)))
        assert main(["inject", "-f", "-"], stdout=out, stderr=err) == 0
    injected = yaml.safe_load(out.getvalue())
    names = [c["name"] for c in injected["spec"]["containers"]]
    assert not any("fluent" in n or "log" in n for n in names[1:]), names  # no logging sidecar at all
    assert "profile logging not injected: container web already mounts /var/log/app" in err.getvalue()
    page = (DOCS / "builtin-profiles.md").read_text(encoding="utf-8")
    assert "skips that mount" not in page and "the **whole profile** that adds it is not injected" in page


def test_the_profile_docs_send_git_sync_users_to_the_repo_parameter():
    page = (DOCS / "profiles.md").read_text(encoding="utf-8")
    assert "set `GITSYNC_REPO` in a user profile" not in page
    assert "`git-sync.sidecar.io/repo`" in page


def test_the_injection_docs_say_where_to_look_for_each_kind_of_workload():
    """Issue 20, 1(c): a Deployment's or Job's pods are created by a controller, which gets the warnings."""
    page = (DOCS / "injection.md").read_text(encoding="utf-8")
    section = page.split("## When a sidecar is missing: where to look", 1)[1].split("\n## ", 1)[0]
    for row in ("a **bare Pod**", "a **Deployment**", "a **Job**"):
        assert row in section, row
    for place in ("explain deployment/web", "explain job/report", "reason=InjectionSkipped", '"skipped"', "--fail-on"):
        assert place in section, place
