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
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from sidecar_injector.base import yaml_io
from sidecar_injector.cli.local import (
    LocalProfiles,
    configmap_profiles,
    local_profiles,
    read_input,
    server_profiles,
    write_output,
)
from sidecar_injector.cli.parser import (
    EXIT_DENIED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    build_parser,
    settings_from,
)
from sidecar_injector.cli.profile_commands import cmd_profiles, cmd_profiles_stale
from sidecar_injector.core.inputs import NamespaceFacts, namespace_facts
from sidecar_injector.profiles.catalog import (
    ProfileResolver,
    elsewhere_warnings,
    offline_resolver,
    profile_resources_in,
    unused_resources,
)
from sidecar_injector.profiles.loading import ProfileError, ProfileSet
from sidecar_injector.profiles.resources import (
    document_role,
    with_namespace,
)
from sidecar_injector.runtime.settings import Settings

if TYPE_CHECKING:
    from sidecar_injector.core.manifests import DocumentResult


def cmd_serve(args: argparse.Namespace) -> int:
    from sidecar_injector.server.serve import ServeError, serve  # uvicorn is only needed here

    settings = settings_from(args)
    try:
        serve(settings, server_profiles(settings))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


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
        text = read_input(filename)
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
    local = local_profiles(settings, args.target_namespace)
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

    write_output(yaml_io.dump_all(outputs), args.output, stdout)
    return EXIT_DENIED if denied or _fails(results, args.fail_on, done.warnings) else EXIT_OK


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
        profiles = configmap_profiles(api, args.configmap, args.builtin_profiles is not False)
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
