"""Write the profile CRDs, generated from the Profile model, into the chart (`make crds`).

The structural OpenAPI schema of SidecarProfile and ClusterSidecarProfile comes from the
pydantic Profile model (sidecar_injector/crds.py); the chart renders the files written
here. ``--check`` writes nothing and exits 1 when the committed files differ (the test
suite checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from sidecar_injector.profiles.crd_schema import CRD_DIRECTORY, crd_files

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    directory = ROOT / CRD_DIRECTORY
    wanted = crd_files()
    present = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.yaml")} if directory.is_dir() else {}
    differ = sorted(name for name in wanted.keys() | present.keys() if wanted.get(name) != present.get(name))
    if check:
        for name in differ:
            print(f"{CRD_DIRECTORY}/{name}: differs from the Profile model's; run `make crds`", file=sys.stderr)
        return 1 if differ else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name in differ:
        path = directory / name
        if name in wanted:
            path.write_text(wanted[name], encoding="utf-8")
            print(f"wrote {CRD_DIRECTORY}/{name}")
        else:
            path.unlink()
            print(f"removed {CRD_DIRECTORY}/{name}")
    if not differ:
        print(f"{CRD_DIRECTORY}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
