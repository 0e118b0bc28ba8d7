"""``sidecar-injector profiles``: list, show, validate, export, stale."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from sidecar_injector.base import yaml_io
from sidecar_injector.cli.local import (
    configmap_profiles,
    local_view,
    read_texts,
    server_profiles,
    suggest,
    table,
    write_output,
)
from sidecar_injector.cli.parser import (
    DEFAULT_PROFILES_CONFIGMAP,
    EXIT_DENIED,
    EXIT_OK,
    CliError,
    settings_from,
)
from sidecar_injector.profiles.catalog import (
    ProfileResolver,
    admission_problems,
    offline_resolver,
    unused_resources,
)
from sidecar_injector.profiles.loading import ProfileError, ProfileSet, builtin_profiles
from sidecar_injector.profiles.resources import (
    CLUSTER,
    profile_spec,
    read_profile_documents,
    resource_from_profile,
    resource_ref,
)
from sidecar_injector.runtime.settings import Settings

if TYPE_CHECKING:
    from sidecar_injector.profiles.model import Profile


def _stale_cell(version: str | None, digest: str | None, values: str | None) -> str:
    return f"{version or '?'} ({digest or '?'}" + (f", values {values})" if values else ")")


def _stale_source(args: argparse.Namespace, api: Any, settings: Settings) -> tuple[ProfileSet, str]:
    """The profiles ``stale`` compares with, and their source in words: the webhook's ConfigMap (the
    chart's by default, as live ``explain``), or with ``--local-profiles`` this CLI's own. When the
    default ConfigMap does not exist, the local profiles with a note, and never ``--restart`` (it
    would restart pods for differing from profiles the webhook does not use)."""
    from kubernetes.client.exceptions import ApiException

    if args.local_profiles:
        return server_profiles(settings), "this CLI's local profiles (built-ins and --profiles-dir)"
    ref = args.configmap or DEFAULT_PROFILES_CONFIGMAP
    try:
        return configmap_profiles(api, ref, args.builtin_profiles is not False), f"ConfigMap {ref}"
    except ApiException as exc:
        if args.configmap or exc.status != 404:
            raise
        if args.restart:
            raise CliError(
                f"the webhook's profiles ConfigMap {ref} cannot be read (HTTP {exc.status} {exc.reason}): "
                "refusing --restart, which would compare the pods with other profiles than the webhook's; pass "
                "--configmap NAMESPACE/NAME (the release's), or --local-profiles to compare with this CLI's own"
            ) from None
        return server_profiles(settings), (
            f"this CLI's local profiles (built-ins and --profiles-dir), because ConfigMap {ref} does not exist "
            "(pass --configmap NAMESPACE/NAME for the webhook's)"
        )


def _compared(source: str, resolver: ProfileResolver, with_resources: bool) -> str:
    """Which profiles ``stale`` compared with, and their versions, in one line."""
    shared = resolver.profiles_for(None)
    versions = ", ".join(f"{name} {shared[name].version}" for name in shared.names()) or "no profiles"
    if not with_resources:
        return f"{source}: {versions} (profile resources not read)"
    tenants = sum(len(own) for own in resolver.resolution.namespaced.values())
    return f"{source} and the cluster's profile resources: {versions}; {tenants} SidecarProfile(s) in use"


def cmd_profiles_stale(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from sidecar_injector.cluster.kube import KubeConfigError, api_client
    from sidecar_injector.cluster.listing import list_namespaces, list_pods, list_profile_resources
    from sidecar_injector.cluster.rollout import Restarter, owners_of
    from sidecar_injector.core.staleness import in_use_profiles, missed_pods, stale_pods

    if args.dry_run and not args.restart:
        raise CliError("--dry-run goes with --restart (without --restart nothing is ever touched)")
    if args.max_per_minute <= 0:
        raise CliError("--max-per-minute must be positive")
    settings = settings_from(args)
    try:
        api = api_client(args.kubeconfig, args.context)
    except KubeConfigError as exc:
        raise CliError(str(exc)) from None
    notes: list[str] = []
    try:
        base, source = _stale_source(args, api, settings)
        namespaced = settings.namespaced_profiles
        resources = list_profile_resources(api, namespaced=namespaced, notes=notes) if args.profile_resources else []
        resolver = offline_resolver(base, resources, namespaced_enabled=namespaced)
        print(f"compared with: {_compared(source, resolver, args.profile_resources)}", file=stderr)
        notes += unused_resources(resolver.resolution)
        pods = list(list_pods(api, args.target_namespace))
        # the namespaces' labels and annotations, as the webhook sees them when it looks them up
        namespaces = list_namespaces(api) if args.namespace_lookup else None
        found = stale_pods(pods, in_use_profiles(resolver), notes, namespaces)
        found += missed_pods(pods, lambda ns: resolver.profiles_for(ns or None), settings.policy, namespaces)
        found.sort(key=lambda s: (s.namespace, s.pod, s.profile))
        outcomes = []
        if args.restart and found:
            restarter = Restarter(
                api,
                max_per_minute=args.max_per_minute,
                dry_run=args.dry_run,
                rollout_timeout_seconds=args.rollout_timeout,
                log=lambda line: print(line, file=stderr, flush=True),
            )
            by_name = {
                (str(p["metadata"].get("namespace")), str(p["metadata"].get("name"))): p
                for p in pods
                if isinstance(p.get("metadata"), dict)
            }
            outcomes = restarter.run(owners_of(found, by_name, restarter.read_replicaset))
    except ApiException as exc:
        raise CliError(f"the Kubernetes API refused: HTTP {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        raise CliError(f"cannot reach the Kubernetes API: {exc}") from None
    for note in notes:
        print(f"note: {note}", file=stderr)
    if args.output == "json":
        items = [dataclasses.asdict(item) for item in found]
        if args.restart:
            owners = [
                {"kind": o.owner.kind, "namespace": o.owner.namespace, "name": o.owner.name, "action": o.action}
                | {"detail": o.detail, "pods": list(o.pods)}
                for o in outcomes
            ]
            json.dump({"pods": items, "owners": owners}, stdout, indent=2)
        else:
            json.dump(items, stdout, indent=2)
        stdout.write("\n")
    elif found:
        table(
            [("NAMESPACE", "POD", "PROFILE", "STATE", "RECORDED", "CURRENT")]
            + [
                (
                    s.namespace,
                    s.pod,
                    s.profile,
                    s.state,
                    _stale_cell(s.recorded_version, s.recorded_hash, s.recorded_values) if s.state != "missed" else "-",
                    _stale_cell(s.current_version, s.current_hash, s.current_values) if s.current_hash else "-",
                )
                for s in found
            ],
            stdout,
        )
        if outcomes:
            print(file=stdout)
            table(
                [("OWNER", "PODS", "ACTION", "WHY")]
                + [(str(o.owner), str(len(o.pods)), o.action, o.detail) for o in outcomes],
                stdout,
            )
    else:
        print("no pod runs an outdated or removed profile, or misses one", file=stdout)
    if args.restart:
        return EXIT_DENIED if any(o.action in ("failed", "not finished") for o in outcomes) else EXIT_OK
    return EXIT_DENIED if found else EXIT_OK


def cmd_profiles_validate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Profiles and profile resources judged as the server would (the resources as `kubectl apply` would be).

    Exit 1 when a document is not usable (every problem listed), 2 on a usage error.
    """
    settings = settings_from(args)
    found = read_profile_documents(read_texts(args.path), args.target_namespace)
    for note in found.notes:
        print(f"note: {note}", file=stderr)
    base = builtin_profiles() if settings.builtin_profiles else ProfileSet({}, {})
    base = ProfileSet({**base.profiles, **found.profiles}, {**base.sources, **found.sources})
    resolver = offline_resolver(base, [obj for _, obj in found.resources], namespaced_enabled=settings.namespaced_profiles)
    problems = list(found.problems)
    valid = sorted(found.profiles)
    seen: dict[str, str] = {}
    for where, obj in found.resources:
        ref = resource_ref(obj)
        if ref is not None and str(ref) in seen:
            problems.append(f"{where}: {ref} is already defined in {seen[str(ref)]}")
            continue
        if ref is not None:
            seen[str(ref)] = where
        lines, warnings = admission_problems(obj, resolver.resolution, base, namespaced_enabled=settings.namespaced_profiles)
        problems += [f"{where}: {line}" for line in lines]
        for warning in warnings:
            print(f"warning: {where}: {warning}", file=stderr)
        if not lines and ref is not None:
            valid.append(str(ref))
    if problems:
        print(f"error: {ProfileError(problems)}", file=stderr)
        return EXIT_DENIED
    print(f"{args.path}: {len(valid)} valid profile(s): {', '.join(valid) or '(none)'}", file=stdout)
    return EXIT_OK


def cmd_profiles_export(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """The profiles as profile documents, or as ClusterSidecarProfile manifests."""
    if args.configmap:
        from sidecar_injector.cluster.kube import KubeConfigError, api_client

        try:
            profiles = configmap_profiles(api_client(args.kubeconfig, args.context), args.configmap, False)
        except KubeConfigError as exc:
            raise CliError(str(exc)) from None
    else:
        profiles = local_view(settings_from(args), None, stderr).profiles_for(None)
    unknown = [name for name in args.names if name not in profiles]
    if unknown:
        raise CliError(f"unknown profile(s) {', '.join(unknown)}; {suggest(unknown[0], profiles.names())}")
    documents = []
    for name in args.names or profiles.names():
        profile = profiles[name]
        if args.as_policy:
            documents += _policies(profile, args)
        elif args.as_crd:
            documents.append(resource_from_profile(profile, CLUSTER))
        else:
            documents.append({"name": profile.name, **profile_spec(profile)})
    if args.as_policy:
        documents += _unknown_profiles_policy(args.names or profiles.names(), args)
    write_output(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False), args.output, stdout)
    return EXIT_OK


def _listed_profiles(resolver: ProfileResolver, namespace: str | None) -> list[tuple[str, Any, str]]:
    """(shown name, profile, source) of every profile in use: cluster-level ones by name, the
    SidecarProfiles as NAMESPACE/NAME (of ``namespace`` only, when given)."""
    shared = resolver.profiles_for(None)
    rows = [(name, shared[name], shared.sources[name]) for name in shared.names()]
    for ns, own in sorted(resolver.resolution.namespaced.items()):
        if namespace is not None and ns != namespace:
            continue
        view = resolver.profiles_for(ns)
        rows += [(f"{ns}/{name}", own[name], view.sources[name]) for name in sorted(own)]
    return rows


def _policies(profile: Profile, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``export --as-policy``: the profile compiled into admission policies (core/policy.py)."""
    from sidecar_injector.core.policy import PolicyRefused, compile_profile

    try:
        return compile_profile(profile, settings_from(args).policy, binding_selector=_binding_selector(args))
    except PolicyRefused as exc:
        raise CliError(str(exc)) from None


def _binding_selector(args: argparse.Namespace) -> dict[str, Any] | None:
    labels = dict(_key_value(item, "--policy-namespace-label") for item in args.policy_namespace_label)
    return {"matchLabels": labels} if labels else None


def _unknown_profiles_policy(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """``export --as-policy``: the policy that warns about profile names none of these policies knows."""
    from sidecar_injector.core.policy_unknown import compile_unknown_profiles

    return compile_unknown_profiles(names, settings_from(args).policy, binding_selector=_binding_selector(args))


def _key_value(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise CliError(f"{flag} takes KEY=VALUE, got {item!r}")
    return key, value


def cmd_profiles(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.profiles_command == "validate":
        return cmd_profiles_validate(args, stdout, stderr)
    if args.profiles_command == "export":
        return cmd_profiles_export(args, stdout, stderr)
    settings = settings_from(args)
    resolver = local_view(settings, args.target_namespace, stderr)
    rows = _listed_profiles(resolver, args.target_namespace)
    if args.profiles_command == "list":
        listed = [("NAME", "VERSION", "HASH", "PARAMETERS", "SOURCE", "DESCRIPTION")]
        for shown, p, source in rows:
            # parameters a pod may set; * marks the required ones (no default)
            params = ",".join(f"{k}{'*' if v.required else ''}" for k, v in p.parameters.items()) or "-"
            listed.append((shown, p.version, p.hash, params, source, p.summary()))
        table(listed, stdout)
        return EXIT_OK
    by_name = {shown: (p, source) for shown, p, source in rows}
    if args.name not in by_name:
        # a SidecarProfile's plain name, when only one namespace has it
        matches = [shown for shown in by_name if shown.rpartition("/")[2] == args.name and "/" in shown]
        if len(matches) != 1:
            raise CliError(f"unknown profile {args.name!r}; {suggest(args.name, sorted(by_name))}")
        args.name = matches[0]
    profile, source = by_name[args.name]
    data = profile.model_dump(by_alias=True, exclude_defaults=True)
    data.pop("name", None)
    print(f"# source: {source}  hash: {profile.hash}", file=stdout)
    stdout.write(yaml_io.dump({"name": profile.name, **data}))
    return EXIT_OK
