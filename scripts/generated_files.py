"""Keep committed generated files equal to their generator's output (`make crds`, `make policies`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def sync_file(root: Path, path: Path, wanted: str, *, check: bool, remedy: str) -> bool:
    """Write `wanted` to root/path when it differs (with `check`: only report it); whether it differed."""
    target = root / path
    differs = not target.is_file() or target.read_text(encoding="utf-8") != wanted
    if differs and check:
        print(f"{path}: differs from its generator's output; run `{remedy}`", file=sys.stderr)
    elif differs:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(wanted, encoding="utf-8")
        print(f"wrote {path}")
    return differs


def sync_directory(root: Path, directory: Path, wanted: Mapping[str, str], *, check: bool, remedy: str) -> bool:
    """Make root/directory's *.yaml exactly `wanted` (name -> text), removing others (with `check`:
    only report the differences); whether anything differed."""
    folder = root / directory
    present = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.yaml")} if folder.is_dir() else {}
    differ = sorted(name for name in wanted.keys() | present.keys() if wanted.get(name) != present.get(name))
    for name in differ:
        if check:
            print(f"{directory}/{name}: differs from its generator's output; run `{remedy}`", file=sys.stderr)
        elif name in wanted:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(wanted[name], encoding="utf-8")
            print(f"wrote {directory}/{name}")
        else:
            (folder / name).unlink()
            print(f"removed {directory}/{name}")
    if not differ and not check:
        print(f"{directory}: up to date")
    return bool(differ)
