"""Micro-benchmark of the injection core: decide() per pod, without HTTP.

What one admission costs the core for a typical pod (built-in profiles without parameters),
for a pod that sets parameters, and for a profile with N placeholders, with the rendering
cache hit (a Deployment's replicas: same values) and missed (every pod different values).
Each figure is the best of several rounds (the machine is shared), in microseconds.

    python bench/core_bench.py [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from sidecar_injector.core.decide import decide
from sidecar_injector.core.inputs import InjectionPolicy, RequestContext
from sidecar_injector.profiles.loading import ProfileSet, builtin_profiles, parse_profiles

POLICY = InjectionPolicy()
CONTEXT = RequestContext(namespace="shop")


def pod(inject: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c-",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c"},
            "annotations": {"sidecar.io/inject": inject, **(annotations or {})},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c", "uid": "u", "controller": True}
            ],
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/web:1.4.2",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": f"E{i}", "value": "x"} for i in range(10)],
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                }
            ],
            "volumes": [{"name": "token", "projected": {"sources": []}}],
        },
    }


def placeholder_profile(count: int) -> ProfileSet:
    env = "\n".join(
        f"      - {{name: V{i}, value: \"{{{{ params.p{i} }}}}-{{{{ pod.labels['app'] }}}}\"}}" for i in range(count)
    )
    params = "\n".join(f"  p{i}: {{type: string, default: v{i}}}" for i in range(count))
    text = f"""
name: many
version: "1"
parameters:
{params}
containers:
  - name: many
    image: busybox:1.37.0
    env:
{env}
"""
    return ProfileSet.of(parse_profiles(text, "bench"))


def best_us(fn: Callable[[int], object], number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(number):
            fn(i)
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=400)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    builtins = builtin_profiles()
    results: dict[str, float] = {}
    typical = pod("logging,metrics")
    results["typical (logging,metrics)"] = best_us(
        lambda _i: decide(typical, CONTEXT, builtins, POLICY), args.number, args.rounds
    )
    git = pod("git-sync", {"git-sync.sidecar.io/repo": "https://github.com/acme/site", "git-sync.sidecar.io/period": "5m"})
    results["git-sync with 2 values set"] = best_us(
        lambda _i: decide(git, CONTEXT, builtins, POLICY), args.number, args.rounds
    )
    for count in (1, 10, 100):
        profiles = placeholder_profile(count)
        same = pod("many")
        results[f"{count} placeholders x2, cache hit"] = best_us(
            lambda _i, same=same, profiles=profiles: decide(same, CONTEXT, profiles, POLICY), args.number, args.rounds
        )
        distinct = [pod("many", {"many.sidecar.io/p0": f"value-{n}"}) for n in range(args.number)]
        profiles["many"].render_cache.entries.clear()

        def miss(i: int, distinct: list[dict[str, Any]] = distinct, profiles: ProfileSet = profiles) -> object:
            profiles["many"].render_cache.entries.clear()
            return decide(distinct[i], CONTEXT, profiles, POLICY)

        results[f"{count} placeholders x2, cache miss"] = best_us(miss, args.number, args.rounds)
    width = max(map(len, results))
    print(f"decide() per pod, best of {args.rounds} rounds of {args.number} ({platform.python_version()}):")
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:8.1f} us")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {"python": sys.version, "rounds": args.rounds, "number": args.number, "us_per_decision": results},
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
