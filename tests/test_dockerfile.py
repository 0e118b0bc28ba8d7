"""The container image's Dockerfile is built the way the chart relies on (hadolint runs in `make lint`).

No docker engine is needed: the structural checks read it as text. Building and running the image is the
e2e suite's job (tests/e2e, `make image`).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"

#: the base every stage uses: python 3.11, an exact patch release, Debian bookworm slim
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    result = []
    for line in joined:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, starting with its FROM."""
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            out.append([])
        assert out, f"{instruction[0]} before the first FROM"
        out[-1].append(instruction)
    return out


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def test_every_stage_uses_the_same_exactly_pinned_python_base(dockerfile):
    bases, stage_names = [], set()
    for stage in stages(dockerfile):
        args = stage[0][1].split()
        assert not any(a.startswith("--platform") for a in args), "no --platform pin: build for the builder's arch"
        image = args[0]
        if len(args) == 3 and args[1].upper() == "AS":
            stage_names.add(args[2].lower())
        if image.lower() in stage_names:
            continue  # FROM <an earlier stage>
        assert PINNED_BASE.match(image), f"base {image!r} is not python:3.11.<patch>-slim-bookworm"
        bases.append(image)
    assert len(bases) >= 2, "multi-stage: a builder and a runtime stage"
    assert len(set(bases)) == 1, f"the venv's interpreter path must exist in the final stage: {bases}"
    assert "latest" not in dockerfile.lower()


def test_builder_installs_runtime_dependencies_only_with_the_constraints(dockerfile):
    builder = stages(dockerfile)[0]
    runs = " ".join(args for word, args in builder if word == "RUN")
    copies = [args for word, args in builder if word == "COPY"]
    assert "venv" in runs and "/opt/venv" in runs
    install = re.search(r"pip (?:--python \S+ )?install (.*?)(?:&&|$)", runs)
    assert install, runs
    options = install.group(1).split()
    assert "--no-cache-dir" in options
    assert "--constraint" in options and options[options.index("--constraint") + 1] == "constraints.txt"
    assert options[-1] == ".", f"install the project itself without extras (no [test]): {options}"
    assert not any("[" in option for option in options)
    assert any("constraints.txt" in c for c in copies), "the constraints file must be in the build"


def test_final_stage_copies_the_venv_only_and_runs_as_numeric_non_root(dockerfile):
    final = stages(dockerfile)[-1]
    copies = [args for word, args in final if word in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not [args for word, args in final if word == "RUN"], "nothing to run at build time: no shell needed"
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] == "65532:65532", users
    env = " ".join(args for word, args in final if word == "ENV")
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    exposed = {port for word, args in final if word == "EXPOSE" for port in args.split()}
    assert exposed == {"8443", "9090"}


def test_entrypoint_is_exec_form_and_serves(dockerfile):
    final = stages(dockerfile)[-1]
    [entrypoint] = [args for word, args in final if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/opt/venv/bin/sidecar-injector", "serve"]
    assert not [args for word, args in final if word == "CMD" and not args.startswith("[")]


def test_oci_labels_with_the_project_version(dockerfile):
    final = stages(dockerfile)[-1]
    labels = " ".join(args for word, args in final if word == "LABEL")
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    args = dict(a.split("=", 1) for word, a in final if word == "ARG" and "=" in a)
    assert args.get("VERSION") == project["version"], "the default VERSION build-arg follows pyproject.toml"
    assert f'org.opencontainers.image.licenses="{project["license"]}"' in labels


def test_dockerignore_lets_in_exactly_what_the_builder_copies():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: everything is excluded unless re-included"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    builder = stages(DOCKERFILE.read_text(encoding="utf-8"))[0]
    sources = {src for word, args in builder if word == "COPY" for src in args.split()[:-1]}
    assert sources <= included, f"COPY sources not in the build context: {sources - included}"
    for secret_or_bulky in (".venv", "certs", ".git", "tests", ".tools"):
        assert secret_or_bulky not in included
