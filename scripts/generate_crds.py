"""Write the profile CRDs, generated from the Profile model, into the chart (`make crds`).

The structural OpenAPI schema of SidecarProfile and ClusterSidecarProfile comes from the
pydantic Profile model (sidecar_injector/profiles/crd_schema.py); the chart renders the files written
here. ``--check`` writes nothing and exits 1 when the committed files differ (the test
suite checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from generated_files import sync_directory

from sidecar_injector.profiles.crd_schema import CRD_DIRECTORY, crd_files

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    differ = sync_directory(ROOT, Path(CRD_DIRECTORY), crd_files(), check=check, remedy="make crds")
    return 1 if check and differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
