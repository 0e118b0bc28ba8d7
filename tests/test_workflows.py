"""The CI workflows follow the rules we rely on.

Pinned kind with a checksum, kindest/node images pinned by digest, matrix references that
exist, make targets that exist, timeouts, a read-only token. The linters themselves
(shellcheck of every script and ``run:`` step, the GitHub workflow schema) run in `make
lint` (scripts/lint_shell.py); these tests check that it reaches everything.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def _lint_shell():
    spec = importlib.util.spec_from_file_location("lint_shell", ROOT / "scripts" / "lint_shell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_lint_shellchecks_the_projects_scripts():
    names = {p.relative_to(ROOT).as_posix() for p in _lint_shell().shell_scripts()}
    assert ".ci/run" in names
    assert "scripts/fetch-helm.sh" in names
    assert "scripts/lint_shell.py" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_make_lint_shellchecks_every_run_step():
    steps = [step for workflow in WORKFLOWS for step in _lint_shell().run_steps(workflow)]
    expected = sum(1 for w in WORKFLOWS for _, _, step in _steps(_load(w)) if "run" in step)
    assert len(steps) == expected > 0
    assert all("${{" not in script for _, script in steps)


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
