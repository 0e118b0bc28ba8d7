"""The ``sidecar-injector`` commands: serve, inject, explain, certs, profiles.

Their arguments are :mod:`sidecar_injector.cli.parser`'s.

Every subcommand builds the one :class:`~sidecar_injector.runtime.settings.Settings` object (environment,
then flags) and reuses the same core as the webhook.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from sidecar_injector.base import yaml_io
from sidecar_injector.cli.parser import (
    DEFAULT_PROFILES_CONFIGMAP,
    EXIT_DENIED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    build_parser,
    settings_from,
)
from sidecar_injector.core.inputs import NamespaceFacts, namespace_facts
from sidecar_injector.profiles.catalog import (
    ProfileResolver,
    admission_problems,
    elsewhere_warnings,
    offline_resolver,
    profile_resources_in,
    unused_resources,
)
from sidecar_injector.profiles.loading import ProfileError, ProfileSet, builtin_profiles, load_profiles, profiles_from_texts
from sidecar_injector.profiles.resources import (
    CLUSTER,
    document_role,
    profile_spec,
    read_profile_documents,
    resource_from_profile,
    resource_ref,
    with_namespace,
)
from sidecar_injector.runtime.settings import Settings

if TYPE_CHECKING:
    from sidecar_injector.core.manifests import DocumentResult
    from sidecar_injector.profiles.model import Profile


def _profiles(settings: Settings) -> ProfileSet:
    """The server's own profiles (``serve``): built-ins and the plain profiles of ``--profiles-dir``."""
    return load_profiles(settings.profiles_dir, include_builtin=settings.builtin_profiles)


@dataclasses.dataclass
class LocalProfiles:
    """The profiles of the offline commands: built-ins and ``--profiles-dir``, which may hold plain
    profiles, SidecarProfiles and ClusterSidecarProfiles (the documents ``profiles validate`` takes)."""

    base: ProfileSet
    #: (where, object) of each profile resource of the directory
    resources: list[tuple[str, Any]]
    #: the directory's other objects, skipped
    notes: list[str]


def _local_profiles(settings: Settings, namespace: str | None = None) -> LocalProfiles:
    """Built-ins overlaid with the directory's plain profiles, and the directory's profile resources
    (a SidecarProfile without a namespace in ``namespace``, else ``default``). Raises ProfileError."""
    base = builtin_profiles() if settings.builtin_profiles else ProfileSet({}, {})
    directory = settings.profiles_dir
    if directory is None:
        return LocalProfiles(base, [], [])
    if not directory.is_dir():
        raise ProfileError([f"{directory}: profiles directory does not exist or is not a directory"])
    found = read_profile_documents(_validate_texts(directory), namespace)
    if found.problems:
        raise ProfileError(found.problems)
    merged = ProfileSet({**base.profiles, **found.profiles}, {**base.sources, **found.sources})
    return LocalProfiles(merged, found.resources, found.notes)


def cmd_serve(args: argparse.Namespace) -> int:
    from sidecar_injector.server.serve import ServeError, serve  # uvicorn is only needed here

    settings = settings_from(args)
    try:
        serve(settings, _profiles(settings))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def _read_input(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{filename}: cannot read: {exc}") from None


def _key_values(pairs: list[str], flag: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{flag} {pair!r}: expected KEY=VALUE")
        result[key.strip()] = value
    return result


def _namespace_from_flags(args: argparse.Namespace) -> NamespaceFacts | None:
    """The target namespace as the flags describe it (None: no flag given)."""
    if not args.namespace_label and not args.namespace_annotation:
        return None
    return NamespaceFacts(
        args.target_namespace or "default",
        _key_values(args.namespace_label, "--namespace-label"),
        _key_values(args.namespace_annotation, "--namespace-annotation"),
    )


def _namespaces_in(documents: list[Any]) -> dict[str, NamespaceFacts]:
    """The Namespace objects in the input, by name: their objects are injected as the server would."""
    found = {}
    for doc in documents:
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items if isinstance(items, list) else []:
            facts = namespace_facts(item) if isinstance(item, dict) and item.get("kind") == "Namespace" else None
            if facts is not None:
                found[facts.name] = facts
    return found


def _documents(filenames: str | list[str]) -> list[Any]:
    """The documents of every ``-f`` file, in order."""
    documents: list[Any] = []
    for filename in [filenames] if isinstance(filenames, str) else filenames:
        text = _read_input(filename)
        try:
            documents += [doc for doc in yaml_io.load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            raise CliError(f"{filename}: not valid YAML: {exc}") from None
    return documents


@dataclasses.dataclass
class Injection:
    """What ``inject``/``explain`` made of their input."""

    outputs: list[Any]
    results: list[DocumentResult]
    #: the profiles a pod of a namespace may ask for (and where each came from)
    view: Any
    #: warnings about the input itself (profile resources not used, a misspelt kind), already printed
    warnings: list[str]


def _inject_all(
    args: argparse.Namespace,
    documents: list[Any],
    profiles: ProfileSet,
    settings: Settings,
    stderr: TextIO,
    extra_resources: Sequence[Any] = (),
) -> Injection:
    """Every document with its pods injected (as the webhook would), and what happened to each.

    SidecarProfile/ClusterSidecarProfile objects among the documents (and ``extra_resources``)
    are resolved as the server resolves them (a SidecarProfile for the objects of its own
    namespace); a pod asking for another namespace's SidecarProfile gets a warning saying so.
    """
    from sidecar_injector.core.manifests import inject_object

    namespaces = _namespaces_in(documents)
    default_facts = _namespace_from_flags(args)
    warnings: list[str] = []
    resolver = _resolver_for(documents, profiles, settings, warnings, args.target_namespace, extra_resources)
    for line in warnings:
        print(f"warning: {line}", file=stderr)

    def view(namespace: str | None) -> ProfileSet:
        # an object without a namespace is created in `default`, as kubectl does (its SidecarProfiles apply)
        return profiles if resolver is None else resolver.profiles_for(namespace or "default")

    outputs: list[Any] = []
    results: list[DocumentResult] = []
    for doc in documents:
        new_doc, found = inject_object(
            doc,
            profiles if resolver is None else view,
            settings.policy,
            namespace=args.target_namespace,
            namespaces=namespaces,
            default_facts=default_facts,
        )
        outputs.append(new_doc)
        results += found if resolver is None else [_with_elsewhere_warnings(result, resolver) for result in found]
    return Injection(outputs, results, view, warnings)


def _fails(results: list[DocumentResult], fail_on: str | None, input_warnings: list[str]) -> bool:
    """Whether ``--fail-on`` makes the command fail: ``skipped`` when a requested profile was not
    injected (into any pod), ``warning`` when that or any warning was given."""
    if fail_on is None:
        return False
    for result in results:
        decision = result.decision
        if decision is None:
            continue
        if any(name not in decision.injected for name in decision.requested):
            return True
        if fail_on == "warning" and decision.warnings:
            return True
    return fail_on == "warning" and bool(input_warnings)


def _with_elsewhere_warnings(result: DocumentResult, resolver: ProfileResolver) -> DocumentResult:
    decision = result.decision
    if decision is None:
        return result
    view = resolver.profiles_for(result.namespace or "default")
    extra = elsewhere_warnings(decision.requested, result.namespace, view, resolver.resolution)
    if not extra:
        return result
    return dataclasses.replace(result, decision=dataclasses.replace(decision, warnings=(*decision.warnings, *extra)))


def _local_for(args: argparse.Namespace, settings: Settings, stderr: TextIO) -> LocalProfiles:
    local = _local_profiles(settings, args.target_namespace)
    for note in local.notes:
        print(f"note: {note}", file=stderr)
    return local


def cmd_inject(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = settings_from(args)
    local = _local_for(args, settings, stderr)
    documents = _documents(args.filename)
    done = _inject_all(args, documents, local.base, settings, stderr, [obj for _, obj in local.resources])
    outputs, results = done.outputs, done.results
    denied = False
    for result in results:
        decision = result.decision
        if decision is None:
            continue
        label = f"{result.kind}/{result.name or '?'}"
        for warning in decision.warnings:
            print(f"warning: {label}: {warning}", file=stderr)
        if decision.outcome == "denied":
            denied = True
            print(f"error: {label}: denied: {decision.message}", file=stderr)
        elif decision.outcome == "injected":
            print(f"{label}: injected {', '.join(decision.injected)}", file=stderr)
        else:
            print(f"{label}: not injected ({decision.reason}: {decision.message})", file=stderr)

    _write_output(yaml_io.dump_all(outputs), args.output, stdout)
    return EXIT_DENIED if denied or _fails(results, args.fail_on, done.warnings) else EXIT_OK


def _write_output(text: str, path: str | None, stdout: TextIO) -> None:
    """``text`` to the file ``path`` (``-o``), or to stdout without one."""
    if not path:
        stdout.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc}") from None


def cmd_explain(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from sidecar_injector.cli.explain import render_text, report

    if bool(args.filename) == bool(args.target):
        raise CliError("explain needs either -f FILE (offline) or KIND/NAME (a live object), not both")
    settings = settings_from(args)
    resources: list[Any] = []
    if args.filename:
        local = _local_for(args, settings, stderr)
        profiles, resources = local.base, [obj for _, obj in local.resources]
        documents = _documents(args.filename)
    else:
        documents, profiles = _live_object(args, stderr)
    done = _inject_all(args, documents, profiles, settings, stderr, resources)
    results = done.results
    bodies = [body for body in (report(result, done.view(result.namespace)) for result in results) if body is not None]
    if not bodies:
        print("no pod or pod template found", file=stderr)
    if args.output == "json":
        json.dump(bodies, stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write("\n".join(render_text(body) for body in bodies))
    return EXIT_DENIED if _fails(results, args.fail_on, done.warnings) else EXIT_OK


def _live_object(args: argparse.Namespace, stderr: TextIO) -> tuple[list[Any], ProfileSet]:
    """The object, its Namespace and the webhook's profiles (ConfigMap and profile resources), read from the cluster."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from sidecar_injector.cluster.kube import KubeConfigError, api_client
    from sidecar_injector.cluster.listing import LIVE_KINDS, read_live_object, read_namespace

    kind_text, sep, name = args.target.partition("/")
    if not sep or not name or kind_text.lower() not in LIVE_KINDS:
        known = ", ".join(sorted({k for k, v in LIVE_KINDS.items() if k == v[0].lower()}))
        raise CliError(f"{args.target!r}: expected KIND/NAME with KIND one of {known} (or their short names)")
    kind = LIVE_KINDS[kind_text.lower()][0]
    namespace = args.target_namespace or "default"
    try:
        api = api_client(args.kubeconfig, args.context)
    except KubeConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        obj = read_live_object(api, kind_text, name, namespace)
        namespace_object = read_namespace(api, namespace)
        profiles = _configmap_profiles(api, args.configmap, args.builtin_profiles is not False)
    except ApiException as exc:
        what = f"{kind}/{name} in namespace {namespace}" if exc.status == 404 else "the Kubernetes API"
        raise CliError(f"{what}: HTTP {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        raise CliError(f"cannot reach the Kubernetes API: {exc}") from None
    obj.setdefault("kind", kind)
    return [namespace_object, obj, *_live_profile_resources(api, namespace, stderr)], profiles


def _live_profile_resources(api: Any, namespace: str, stderr: TextIO) -> list[dict[str, Any]]:
    """The ClusterSidecarProfiles and the namespace's SidecarProfiles the webhook also uses (resolved
    like the server by ``_inject_all``); none, with a note, when they cannot be read."""
    from kubernetes.client.exceptions import ApiException

    from sidecar_injector.cluster.listing import list_profile_resources

    notes: list[str] = []
    try:
        found = list_profile_resources(api, namespace=namespace, notes=notes)
    except ApiException as exc:
        notes.append(f"profile resources not read (HTTP {exc.status} {exc.reason}): explained without them")
        found = []
    for note in notes:
        print(f"note: {note}", file=stderr)
    return found


def _resolver_for(
    documents: list[Any],
    profiles: ProfileSet,
    settings: Settings,
    warnings: list[str],
    namespace: str | None = None,
    extra_resources: Sequence[Any] = (),
) -> ProfileResolver | None:
    """A resolver with the profile resources among ``documents`` and ``extra_resources`` (None: there
    are none), as the server's. A SidecarProfile without a namespace is in ``namespace``, else
    ``default`` (as ``kubectl apply`` creates it); a document meant as a profile resource that the
    API server would refuse (a misspelt kind, a version that does not exist) gets a warning."""
    for doc in documents:
        role, line = document_role(doc)
        if role == "invalid" and line is not None:
            warnings.append(line)
    resources = [with_namespace(obj, namespace) for obj in [*profile_resources_in(documents), *extra_resources]]
    if not resources:
        return None
    resolver = offline_resolver(profiles, resources, namespaced_enabled=settings.namespaced_profiles)
    warnings += unused_resources(resolver.resolution)
    return resolver


def cmd_certs(args: argparse.Namespace, stdout: TextIO) -> int:
    from sidecar_injector.webhook.tls import write_cert_bundle

    try:
        paths = write_cert_bundle(
            args.out,
            args.service,
            args.namespace,
            extra_dns=args.extra_dns,
            extra_ips=args.extra_ip,
            days=args.days,
            ca_days=args.ca_days,
        )
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {paths.ca_cert}, {paths.cert}, {paths.key}", file=stdout)
    return EXIT_OK


def _configmap_profiles(api: Any, ref: str, include_builtin: bool) -> ProfileSet:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise CliError(f"--configmap {ref!r}: expected NAMESPACE/NAME")
    from sidecar_injector.cluster.listing import configmap_profile_texts

    return profiles_from_texts(configmap_profile_texts(api, namespace, name), include_builtin=include_builtin)


def _table(rows: Sequence[tuple[str, ...]], stdout: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=stdout)


def _stale_cell(version: str | None, digest: str | None, values: str | None) -> str:
    return f"{version or '?'} ({digest or '?'}" + (f", values {values})" if values else ")")


def _stale_source(args: argparse.Namespace, api: Any, settings: Settings) -> tuple[ProfileSet, str]:
    """The profiles ``stale`` compares with, and their source in words: the webhook's ConfigMap (the
    chart's by default, as live ``explain``), or with ``--local-profiles`` this CLI's own. When the
    default ConfigMap does not exist, the local profiles with a note, and never ``--restart`` (it
    would restart pods for differing from profiles the webhook does not use)."""
    from kubernetes.client.exceptions import ApiException

    if args.local_profiles:
        return _profiles(settings), "this CLI's local profiles (built-ins and --profiles-dir)"
    ref = args.configmap or DEFAULT_PROFILES_CONFIGMAP
    try:
        return _configmap_profiles(api, ref, args.builtin_profiles is not False), f"ConfigMap {ref}"
    except ApiException as exc:
        if args.configmap or exc.status != 404:
            raise
        if args.restart:
            raise CliError(
                f"the webhook's profiles ConfigMap {ref} cannot be read (HTTP {exc.status} {exc.reason}): "
                "refusing --restart, which would compare the pods with other profiles than the webhook's; pass "
                "--configmap NAMESPACE/NAME (the release's), or --local-profiles to compare with this CLI's own"
            ) from None
        return _profiles(settings), (
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
        _table(
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
            _table(
                [("OWNER", "PODS", "ACTION", "WHY")]
                + [(str(o.owner), str(len(o.pods)), o.action, o.detail) for o in outcomes],
                stdout,
            )
    else:
        print("no pod runs an outdated or removed profile, or misses one", file=stdout)
    if args.restart:
        return EXIT_DENIED if any(o.action in ("failed", "not finished") for o in outcomes) else EXIT_OK
    return EXIT_DENIED if found else EXIT_OK


def _validate_texts(path: Path) -> list[tuple[str, str]]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    elif path.exists():
        files = [path]
    else:
        raise CliError(f"{path}: no such file or directory")
    texts = []
    for file in files:
        try:
            texts.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{file}: cannot read: {exc}") from None
    return texts


def cmd_profiles_validate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Profiles and profile resources judged as the server would (the resources as `kubectl apply` would be).

    Exit 1 when a document is not usable (every problem listed), 2 on a usage error.
    """
    settings = settings_from(args)
    found = read_profile_documents(_validate_texts(args.path), args.target_namespace)
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
            profiles = _configmap_profiles(api_client(args.kubeconfig, args.context), args.configmap, False)
        except KubeConfigError as exc:
            raise CliError(str(exc)) from None
    else:
        profiles = _local_view(settings_from(args), None, stderr).profiles_for(None)
    unknown = [name for name in args.names if name not in profiles]
    if unknown:
        raise CliError(f"unknown profile(s) {', '.join(unknown)}; {_suggest(unknown[0], profiles.names())}")
    documents = []
    for name in args.names or profiles.names():
        profile = profiles[name]
        if args.as_policy:
            documents += _policies(profile, args)
        elif args.as_crd:
            documents.append(resource_from_profile(profile, CLUSTER))
        else:
            documents.append({"name": profile.name, **profile_spec(profile)})
    _write_output(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False), args.output, stdout)
    return EXIT_OK


def _suggest(name: str, available: Sequence[str]) -> str:
    """``did you mean X?`` (the closest available name) and what is available."""
    import difflib

    close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}available: {', '.join(available) or '(none)'}"


def _local_view(settings: Settings, namespace: str | None, stderr: TextIO) -> ProfileResolver:
    """The local profiles (built-ins, --profiles-dir with its profile resources) resolved as the server would."""
    local = _local_profiles(settings, namespace)
    for note in local.notes:
        print(f"note: {note}", file=stderr)
    resolver = offline_resolver(
        local.base, [obj for _, obj in local.resources], namespaced_enabled=settings.namespaced_profiles
    )
    for line in unused_resources(resolver.resolution):
        print(f"warning: {line}", file=stderr)
    return resolver


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

    labels = dict(_key_value(item, "--policy-namespace-label") for item in args.policy_namespace_label)
    try:
        return compile_profile(
            profile, settings_from(args).policy, binding_selector={"matchLabels": labels} if labels else None
        )
    except PolicyRefused as exc:
        raise CliError(str(exc)) from None


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
    resolver = _local_view(settings, args.target_namespace, stderr)
    rows = _listed_profiles(resolver, args.target_namespace)
    if args.profiles_command == "list":
        table = [("NAME", "VERSION", "HASH", "PARAMETERS", "SOURCE", "DESCRIPTION")]
        for shown, p, source in rows:
            # parameters a pod may set; * marks the required ones (no default)
            params = ",".join(f"{k}{'*' if v.required else ''}" for k, v in p.parameters.items()) or "-"
            table.append((shown, p.version, p.hash, params, source, p.summary()))
        _table(table, stdout)
        return EXIT_OK
    by_name = {shown: (p, source) for shown, p, source in rows}
    if args.name not in by_name:
        # a SidecarProfile's plain name, when only one namespace has it
        matches = [shown for shown in by_name if shown.rpartition("/")[2] == args.name and "/" in shown]
        if len(matches) != 1:
            raise CliError(f"unknown profile {args.name!r}; {_suggest(args.name, sorted(by_name))}")
        args.name = matches[0]
    profile, source = by_name[args.name]
    data = profile.model_dump(by_alias=True, exclude_defaults=True)
    data.pop("name", None)
    print(f"# source: {source}  hash: {profile.hash}", file=stdout)
    stdout.write(yaml_io.dump({"name": profile.name, **data}))
    return EXIT_OK


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "inject":
            return cmd_inject(args, stdout, stderr)
        if args.command == "explain":
            return cmd_explain(args, stdout, stderr)
        if args.command == "certs":
            return cmd_certs(args, stdout)
        if args.profiles_command == "stale":
            return cmd_profiles_stale(args, stdout, stderr)
        return cmd_profiles(args, stdout, stderr)
    except ProfileError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
