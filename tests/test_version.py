"""The version is written once (pyproject.toml); everything else reads it or is checked against it."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import sidecar_injector

ROOT = Path(__file__).resolve().parents[1]
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

#: the files allowed to spell the version out, each checked by a test here (CHANGELOG.md: its release headings)
WRITTEN_IN = {"pyproject.toml", "charts/sidecar-injector/Chart.yaml", "Dockerfile", "CHANGELOG.md"}
#: records of what a past version measured keep the version they ran; tests use versions of their own as data
RECORDS = ("bench/results/", "tests/")


def test_the_package_version_is_read_from_the_installed_metadata():
    assert sidecar_injector.__version__ == importlib.metadata.version("sidecar-injector")
    assert sidecar_injector.__version__ == PROJECT_VERSION, (
        "the installed metadata is older than pyproject.toml: reinstall (make install)"
    )


def test_version_flag_prints_the_package_version():
    out = subprocess.run(
        [sys.executable, "-m", "sidecar_injector", "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["sidecar-injector", sidecar_injector.__version__]


def test_the_charts_app_version_is_the_package_version():
    chart = yaml.safe_load((ROOT / "charts/sidecar-injector/Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == sidecar_injector.__version__, "bump appVersion in Chart.yaml with pyproject.toml"


def test_the_dockerfiles_default_version_label_is_the_package_version():
    [default] = re.findall(r"^ARG VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert default == sidecar_injector.__version__, "bump the Dockerfile's ARG VERSION default with pyproject.toml"


def test_the_makefile_passes_the_pyproject_version_to_the_image_build():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "E2E_VERSION     := $(shell sed -n 's/^version = \"\\(.*\\)\"$$/\\1/p' pyproject.toml)" in makefile
    assert "--build-arg VERSION=$(E2E_VERSION)" in makefile


def test_the_changelog_has_a_section_for_the_current_version():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(PROJECT_VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.MULTILINE), (
        f"CHANGELOG.md has no '## [{PROJECT_VERSION}] - YYYY-MM-DD' section"
    )


def test_no_other_file_hard_codes_the_version():
    """A release bumps pyproject.toml and the few files checked above; nothing else goes stale."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=60)
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): walk the tree instead
        files = [
            p.relative_to(ROOT).as_posix()
            for p in ROOT.rglob("*")
            if p.is_file() and not {".git", ".venv", ".tools", "build", "__pycache__"} & set(p.parts)
        ]
    else:
        files = [f for f in listed.stdout.decode().split("\0") if f]
    pattern = re.compile(rf"(?<![\w.]){re.escape(PROJECT_VERSION)}(?![\w.])")
    found = []
    for name in files:
        path = ROOT / name
        if name in WRITTEN_IN or name.startswith(RECORDS) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not found, f"the version {PROJECT_VERSION} is hard-coded here (read it, or write <version>): {found}"
