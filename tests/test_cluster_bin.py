"""scripts/cluster-bin.sh and how the control-plane tier finds its binaries: KUBEBUILDER_ASSETS,
the rebuild stamp, and what happens without Go (skip locally, fail on CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "cluster-bin.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import controlplane  # noqa: E402  (tests/cluster is not on the test path of this tier)


def _no_go_path(tmp_path: Path) -> str:
    """A PATH with bash and coreutils but no `go`."""
    bin_dir = tmp_path / "nogo-bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "cat", "sha256sum", "cut", "awk", "mkdir", "rm", "dirname", "env", "uname"):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def _assets(tmp_path: Path, names: tuple[str, ...] = NAMES) -> Path:
    folder = tmp_path / "assets"
    folder.mkdir()
    for name in names:
        binary = folder / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return folder


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": _no_go_path(tmp_path), "HOME": str(tmp_path), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=environment, capture_output=True, text=True, check=False)


def test_every_binary_from_kubebuilder_assets_needs_no_go(tmp_path: Path) -> None:
    result = run(tmp_path, KUBEBUILDER_ASSETS=str(_assets(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("from KUBEBUILDER_ASSETS") == 4


def test_envtest_assets_without_a_controller_manager_need_go_for_it(tmp_path: Path) -> None:
    assets = _assets(tmp_path, ("etcd", "kube-apiserver", "kubectl"))
    result = run(tmp_path, KUBEBUILDER_ASSETS=str(assets), CI="true")
    assert result.returncode == 2 and "no Go toolchain" in result.stderr


def test_without_go_it_says_so_and_lets_the_tier_skip_locally_but_fails_on_ci(tmp_path: Path) -> None:
    local = run(tmp_path, "--if-possible")
    assert local.returncode == 0 and "will skip" in local.stderr
    on_ci = run(tmp_path, "--if-possible", CI="true")
    assert on_ci.returncode == 2 and "no Go toolchain" in on_ci.stderr


def test_the_tier_prefers_kubebuilder_assets_and_names_the_fix_when_binaries_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = _assets(tmp_path)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found, why = controlplane.find_binaries()
    assert why == "" and {name: path.parent for name, path in found.items()} == dict.fromkeys(NAMES, assets)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "empty"))
    monkeypatch.setattr(controlplane, "BUILT", tmp_path / "nothing-built")
    found, why = controlplane.find_binaries()
    assert found == {} and "make cluster-bin" in why


def test_the_build_module_pins_one_release_with_every_staging_module_replaced() -> None:
    go_mod = (ROOT / "scripts" / "controlplane" / "go.mod").read_text()
    release = next(line.split()[1] for line in go_mod.splitlines() if line.strip().startswith("k8s.io/kubernetes "))
    assert release.startswith("v1.37.")
    staging = release.replace("v1.", "v0.", 1)
    replaced = [line.split()[0] for line in go_mod.splitlines() if "=>" in line]
    assert {"k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "k8s.io/streaming"} <= set(replaced)
    for line in go_mod.splitlines():
        if "=>" in line:
            assert line.split()[-1] == staging, line
    assert (ROOT / "scripts" / "controlplane" / "go.sum").stat().st_size > 0
    assert os.access(SCRIPT, os.X_OK)
