"""Write app/sidecar_injector/profiles/kube_types.json: the Kubernetes object fields profiles are checked against.

The profile checker (sidecar_injector.profiles.object_schema) walks Container, Volume, VolumeMount and
EnvVar objects field by field. The field names and types come from the official
`kubernetes` client's models, which take half a second to import; this script extracts
the part reachable from those roots once, so commands that load profiles (offline `inject`
included) never import the client. tests/test_profiles.py fails when the file differs from
what the installed client gives: run `make kube-types` after changing the kubernetes pin.

    python scripts/gen_kube_types.py [--check]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOTS = ("V1Container", "V1Volume", "V1VolumeMount", "V1EnvVar")
TARGET = Path(__file__).resolve().parents[1] / "app" / "sidecar_injector" / "profiles" / "kube_types.json"
_NESTED = re.compile(r"^(?:List\[(.+)\]|Dict\[str, (.+)\])$")


def reachable_types() -> dict[str, dict[str, str]]:
    """{model name: {json field: client type string}} for every model reachable from ROOTS."""
    import kubernetes.client.models as models

    found: dict[str, dict[str, str]] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        cls = getattr(models, name, None)
        if name in found or cls is None or not hasattr(cls, "openapi_types"):
            continue
        fields = {cls.attribute_map[attr]: typ for attr, typ in cls.openapi_types.items()}
        found[name] = dict(sorted(fields.items()))
        for typ in fields.values():
            while match := _NESTED.match(typ):
                typ = match.group(1) or match.group(2)
            todo.append(typ)
    return dict(sorted(found.items()))


def render() -> str:
    import kubernetes

    document = {"kubernetesClient": kubernetes.__version__, "roots": list(ROOTS), "types": reachable_types()}
    return json.dumps(document, indent=1, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run `make kube-types`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
