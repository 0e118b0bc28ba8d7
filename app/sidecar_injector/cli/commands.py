"""The ``sidecar-injector`` command: serve, inject, certs, profiles.

Every subcommand builds the one :class:`~sidecar_injector.runtime.settings.Settings` object (environment,
then flags) and reuses the same core as the webhook.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO, Union, get_args, get_origin

import yaml
from pydantic import ValidationError

from sidecar_injector import __version__
from sidecar_injector.base import yaml_io
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
    profile_spec,
    read_profile_documents,
    resource_from_profile,
    resource_ref,
)
from sidecar_injector.runtime.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from sidecar_injector.core.manifests import DocumentResult

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""


#: the profiles ConfigMap of the chart's default release (namespace/name)
DEFAULT_PROFILES_CONFIGMAP = "sidecar-injector/sidecar-injector-profiles"
#: settings every command that loads profiles takes
PROFILE_SETTINGS = ("profiles_dir", "builtin_profiles")
#: settings every command that decides injections takes
POLICY_SETTINGS = ("strict", "native_sidecars", "default_profiles", "cluster_wide")
#: settings of commands that take SidecarProfile/ClusterSidecarProfile objects in their input
RESOURCE_SETTINGS = ("namespaced_profiles",)


def _setting_flag(parser: argparse.ArgumentParser, name: str) -> None:
    """``--NAME`` for the setting ``name``: type, choices, help and default from the settings model.

    Booleans get ``--x/--no-x``; lists take a comma-separated value (as their environment
    variable does). The flag's value is None when it is not given, so the environment (and
    then the default) decides.
    """
    field = Settings.model_fields[name]
    annotation = field.annotation
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):  # X | None: the flag takes an X
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        default = "on" if default else "off"
    shown = f"; default {', '.join(default) if isinstance(default, list) else default}" if default not in (None, []) else ""
    help_text = f"{field.description}{shown} [env {ENV_PREFIX}{name.upper()}]".replace("%", "%%")
    option = "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif get_origin(annotation) is Literal:
        choices = get_args(annotation)
        upper = all(isinstance(c, str) and c.isupper() for c in choices)
        kwargs.update(choices=choices, type=str.upper if upper else str)
    elif get_origin(annotation) is list:
        kwargs.update(type=str, metavar="A,B")
    elif annotation in (int, float):
        kwargs.update(type=annotation, metavar="N")
    elif annotation is Path:
        kwargs.update(type=Path, metavar="PATH")
    elif annotation is str:
        kwargs.update(type=str, metavar="TEXT")
    else:  # pragma: no cover - a new kind of setting needs a rule here
        raise TypeError(f"setting {name}: no command-line flag for {annotation!r}")
    parser.add_argument(option, **kwargs)


def _setting_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    for name in names:
        _setting_flag(parser, name)


def _namespace_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of the target namespace, e.g. sidecar.io/inject=enabled (repeatable); "
        "a Namespace object in the input gives them for its own objects",
    )
    parser.add_argument(
        "--namespace-annotation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an annotation of the target namespace, e.g. sidecar.io/profiles=logging,metrics or "
        "git-sync.sidecar.io/period=5m (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar-injector",
        description="Kubernetes mutating admission webhook that injects sidecar profiles into pods.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the webhook over HTTPS",
        description="Serve /mutate over HTTPS. Every setting has a flag here and an environment variable; "
        "a flag overrides the variable.",
    )
    _setting_flags(serve, Settings.model_fields)

    inject = commands.add_parser("inject", help="inject sidecars into manifests offline (Pods, Deployments, Jobs, ...)")
    inject.add_argument(
        "-f",
        "--filename",
        required=True,
        help="YAML file with one or more documents, or - for stdin; SidecarProfile/ClusterSidecarProfile objects "
        "in it are used as the server would (a SidecarProfile for the objects of its own namespace)",
    )
    inject.add_argument("-o", "--output", help="write the result here instead of stdout")
    inject.add_argument(
        "--namespace", dest="target_namespace", help="namespace the objects are created in (default: their own)"
    )
    _namespace_flags(inject)
    _setting_flags(inject, (*PROFILE_SETTINGS, *RESOURCE_SETTINGS, *POLICY_SETTINGS))

    explain = commands.add_parser(
        "explain",
        help="why each pod (template) gets what it gets: decision, warnings, values and their sources, what is added",
        description="Explain the injection decision for the pods and pod templates of a file (-f, offline, as "
        "`inject` sees them) or of one live object (KIND/NAME -n NAMESPACE, read from the cluster with the "
        "profiles of the running webhook's ConfigMap).",
    )
    explain.add_argument("target", nargs="?", metavar="KIND/NAME", help="a live object, e.g. deployment/web")
    explain.add_argument("-f", "--filename", help="YAML file with one or more documents, or - for stdin")
    explain.add_argument("-n", "--namespace", dest="target_namespace", help="the object's namespace (default: default)")
    _namespace_flags(explain)
    explain.add_argument(
        "--configmap",
        metavar="NAMESPACE/NAME",
        default=DEFAULT_PROFILES_CONFIGMAP,
        help=f"live: the webhook's profiles ConfigMap (default {DEFAULT_PROFILES_CONFIGMAP}, the chart's)",
    )
    explain.add_argument("--kubeconfig", help="live: kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    explain.add_argument("--context", help="live: kubeconfig context")
    explain.add_argument("-o", "--output", choices=["text", "json"], default="text")
    _setting_flags(explain, (*PROFILE_SETTINGS, *POLICY_SETTINGS))

    certs = commands.add_parser("certs", help="certificates for the webhook")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    generate = certs_commands.add_parser("generate", help="create a CA and a serving certificate")
    generate.add_argument("--service", required=True, help="the webhook's Service name")
    generate.add_argument("--namespace", required=True, help="the Service's namespace")
    generate.add_argument("--out", required=True, type=Path, help="directory for ca.crt, tls.crt, tls.key")
    generate.add_argument("--days", type=int, default=365, help="serving certificate validity (default 365)")
    generate.add_argument("--ca-days", type=int, default=1825, help="CA validity (default 1825)")
    generate.add_argument("--extra-dns", action="append", default=[], help="another DNS name (repeatable)")
    generate.add_argument("--extra-ip", action="append", default=[], help="an IP address SAN (repeatable)")

    profiles = commands.add_parser("profiles", help="list, show, validate or export profiles; stale pods")
    profile_commands = profiles.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    listing = profile_commands.add_parser("list", help="the available profiles")
    _setting_flags(listing, PROFILE_SETTINGS)
    show = profile_commands.add_parser("show", help="one profile as YAML")
    show.add_argument("name")
    _setting_flags(show, PROFILE_SETTINGS)
    validate = profile_commands.add_parser(
        "validate",
        help="check profiles: a file or a directory of them, plain or as SidecarProfile/ClusterSidecarProfile objects",
        description="Check profiles as the server would load them: profile files, and SidecarProfile / "
        "ClusterSidecarProfile objects (refused as `kubectl apply` would refuse them, with the same messages: "
        "no SidecarProfile may take the name of a cluster-level profile, which the built-in profiles are too "
        "unless --no-builtin-profiles).",
    )
    validate.add_argument("path", type=Path, metavar="FILE|DIR")
    _setting_flags(validate, ("builtin_profiles", *RESOURCE_SETTINGS))
    export = profile_commands.add_parser(
        "export",
        help="print profiles as YAML, or as ClusterSidecarProfile manifests (--as-crd)",
        description="Print the local profiles (built-ins and --profiles-dir) or those of the webhook's ConfigMap "
        "(--configmap) as profile documents, or with --as-crd as ClusterSidecarProfile manifests to "
        "`kubectl apply` (the ConfigMap keeps working meanwhile: a ClusterSidecarProfile replaces the "
        "ConfigMap's profile of the same name).",
    )
    export.add_argument("names", nargs="*", metavar="NAME", help="only these profiles (default: all)")
    export.add_argument("--as-crd", action="store_true", help="ClusterSidecarProfile manifests (sidecar.io/v1alpha1)")
    export.add_argument("--configmap", metavar="NAMESPACE/NAME", help="the profiles of this ConfigMap (the chart's)")
    export.add_argument("--kubeconfig", help="kubeconfig file, with --configmap")
    export.add_argument("--context", help="kubeconfig context, with --configmap")
    export.add_argument("-o", "--output", help="write them here instead of stdout")
    _setting_flags(export, PROFILE_SETTINGS)
    stale = profile_commands.add_parser(
        "stale",
        help="pods of the cluster with an older or removed profile, or missing one (exit 1 if any); --restart rolls them",
        description="List running pods whose sidecar.io/status records a profile hash that differs from the "
        "current profile, or a profile that no longer exists (stale), and pods the current rules would inject "
        "that lack a profile (missed: created while the webhook was unavailable, or before their namespace "
        "opted in), decided by the same core as admission. Current means the webhook's ConfigMap (--configmap) "
        "or, without it, the local profiles (built-ins and --profiles-dir), with the cluster's "
        "ClusterSidecarProfiles and SidecarProfiles; pass the webhook's policy settings (--default-profiles, "
        "--cluster-wide, --excluded-namespaces, SIDECAR_INJECTOR_NAMESPACE) for the missed pods. With --restart, "
        "the owning Deployments, StatefulSets and DaemonSets are restarted as `kubectl rollout restart` does, "
        "one at a time, each rollout awaited, rate-limited; owners mid-rollout are skipped; bare pods and Jobs "
        "are listed, never touched.",
    )
    scope = stale.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", dest="target_namespace", help="only this namespace (default: all)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (the default)")
    stale.add_argument(
        "--configmap",
        metavar="NAMESPACE/NAME",
        help="compare with the profiles in this ConfigMap, e.g. the chart's sidecar-injector/sidecar-injector-profiles",
    )
    stale.add_argument(
        "--no-profile-resources",
        dest="profile_resources",
        action="store_false",
        help="do not read the cluster's ClusterSidecarProfiles and SidecarProfiles",
    )
    stale.add_argument(
        "--no-namespace-lookup",
        dest="namespace_lookup",
        action="store_false",
        help="decide missed pods without the namespaces' labels and annotations (as a webhook without "
        "namespace lookup does)",
    )
    stale.add_argument("--restart", action="store_true", help="restart the owners of the stale and missed pods")
    stale.add_argument("--dry-run", action="store_true", help="with --restart: say what would be restarted, touch nothing")
    stale.add_argument(
        "--max-per-minute", type=float, default=6.0, metavar="N", help="with --restart: at most N restarts a minute (6)"
    )
    stale.add_argument(
        "--rollout-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with --restart: wait this long for each rollout before the next owner, and stop the run if it "
        "does not finish (default 600; 0: do not wait)",
    )
    stale.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    stale.add_argument("--context", help="kubeconfig context")
    stale.add_argument("-o", "--output", choices=["table", "json"], default="table")
    _setting_flags(stale, (*PROFILE_SETTINGS, *RESOURCE_SETTINGS, *POLICY_SETTINGS, "excluded_namespaces"))
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment variables, overridden by the flags that were given."""
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "settings"
            source = f"--{field.replace('_', '-')} / SIDECAR_INJECTOR_{field.upper()}"
            problems.append(f"{source} = {error.get('input')!r}: {error['msg']}")
        raise CliError("invalid settings: " + "; ".join(problems)) from None


def _profiles(settings: Settings) -> ProfileSet:
    return load_profiles(settings.profiles_dir, include_builtin=settings.builtin_profiles)


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


def _documents(filename: str) -> list[Any]:
    text = _read_input(filename)
    try:
        return [doc for doc in yaml_io.load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{filename}: not valid YAML: {exc}") from None


def _inject_all(
    args: argparse.Namespace, documents: list[Any], profiles: ProfileSet, settings: Settings, stderr: TextIO
) -> tuple[list[Any], list[DocumentResult]]:
    """Every document with its pods injected (as the webhook would), and what happened to each.

    SidecarProfile/ClusterSidecarProfile objects among the documents are resolved as the
    server resolves them (a SidecarProfile for the objects of its own namespace); a pod
    asking for another namespace's SidecarProfile gets a warning saying so.
    """
    from sidecar_injector.core.manifests import inject_object

    namespaces = _namespaces_in(documents)
    default_facts = _namespace_from_flags(args)
    resolver = _resolver_for(documents, profiles, settings, stderr)
    outputs: list[Any] = []
    results: list[DocumentResult] = []
    for doc in documents:
        new_doc, found = inject_object(
            doc,
            profiles if resolver is None else resolver.profiles_for,
            settings.policy,
            namespace=args.target_namespace,
            namespaces=namespaces,
            default_facts=default_facts,
        )
        outputs.append(new_doc)
        results += found if resolver is None else [_with_elsewhere_warnings(result, resolver) for result in found]
    return outputs, results


def _with_elsewhere_warnings(result: DocumentResult, resolver: ProfileResolver) -> DocumentResult:
    decision = result.decision
    if decision is None:
        return result
    view = resolver.profiles_for(result.namespace)
    extra = elsewhere_warnings(decision.requested, result.namespace, view, resolver.resolution)
    if not extra:
        return result
    return dataclasses.replace(result, decision=dataclasses.replace(decision, warnings=(*decision.warnings, *extra)))


def cmd_inject(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = settings_from(args)
    profiles = _profiles(settings)
    outputs, results = _inject_all(args, _documents(args.filename), profiles, settings, stderr)
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
    return EXIT_DENIED if denied else EXIT_OK


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
    if args.filename:
        profiles = _profiles(settings)
        documents = _documents(args.filename)
    else:
        documents, profiles = _live_object(args, stderr)
    _outputs, results = _inject_all(args, documents, profiles, settings, stderr)
    bodies = [body for body in map(report, results) if body is not None]
    if not bodies:
        print("no pod or pod template found", file=stderr)
    if args.output == "json":
        json.dump(bodies, stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write("\n".join(render_text(body) for body in bodies))
    return EXIT_OK


#: what `explain KIND/NAME` reads: kind name or short name -> (Kind, API class, read method)
_LIVE_KINDS = {
    **dict.fromkeys(("pod", "pods", "po"), ("Pod", "CoreV1Api", "read_namespaced_pod")),
    **dict.fromkeys(("deployment", "deployments", "deploy"), ("Deployment", "AppsV1Api", "read_namespaced_deployment")),
    **dict.fromkeys(("statefulset", "statefulsets", "sts"), ("StatefulSet", "AppsV1Api", "read_namespaced_stateful_set")),
    **dict.fromkeys(("daemonset", "daemonsets", "ds"), ("DaemonSet", "AppsV1Api", "read_namespaced_daemon_set")),
    **dict.fromkeys(("replicaset", "replicasets", "rs"), ("ReplicaSet", "AppsV1Api", "read_namespaced_replica_set")),
    **dict.fromkeys(("job", "jobs"), ("Job", "BatchV1Api", "read_namespaced_job")),
    **dict.fromkeys(("cronjob", "cronjobs", "cj"), ("CronJob", "BatchV1Api", "read_namespaced_cron_job")),
    **dict.fromkeys(
        ("replicationcontroller", "replicationcontrollers", "rc"),
        ("ReplicationController", "CoreV1Api", "read_namespaced_replication_controller"),
    ),
}


def _live_object(args: argparse.Namespace, stderr: TextIO) -> tuple[list[Any], ProfileSet]:
    """The object, its Namespace and the webhook's profiles (ConfigMap and profile resources), read from the cluster."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from sidecar_injector.cluster.kube import KubeConfigError, api_client, raw_response

    kind_text, sep, name = args.target.partition("/")
    if not sep or not name or kind_text.lower() not in _LIVE_KINDS:
        known = ", ".join(sorted({k for k, v in _LIVE_KINDS.items() if k == v[0].lower()}))
        raise CliError(f"{args.target!r}: expected KIND/NAME with KIND one of {known} (or their short names)")
    kind, api_class, method = _LIVE_KINDS[kind_text.lower()]
    namespace = args.target_namespace or "default"
    try:
        api = api_client(args.kubeconfig, args.context)
    except KubeConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        reader = getattr(getattr(client, api_class)(api), method)
        response = raw_response(reader(name, namespace, _preload_content=False, _request_timeout=30))
        obj = json.loads(response.data)
        ns_response = raw_response(
            client.CoreV1Api(api).read_namespace(namespace, _preload_content=False, _request_timeout=30)
        )
        namespace_object = json.loads(ns_response.data)
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


def _resolver_for(documents: list[Any], profiles: ProfileSet, settings: Settings, stderr: TextIO) -> ProfileResolver | None:
    """A resolver with the profile resources among ``documents`` (None: there are none), as the server's."""
    resources = profile_resources_in(documents)
    if not resources:
        return None
    resolver = offline_resolver(profiles, resources, namespaced_enabled=settings.namespaced_profiles)
    for line in unused_resources(resolver.resolution):
        print(f"warning: {line}", file=stderr)
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
    from kubernetes import client

    configmap = client.CoreV1Api(api).read_namespaced_config_map(name, namespace, _request_timeout=30)
    texts = sorted(
        (f"configmap {ref}:{key}", text) for key, text in (configmap.data or {}).items() if key.endswith((".yaml", ".yml"))
    )
    return profiles_from_texts(texts, include_builtin=include_builtin)


def _table(rows: Sequence[tuple[str, ...]], stdout: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=stdout)


def _stale_cell(version: str | None, digest: str | None, values: str | None) -> str:
    return f"{version or '?'} ({digest or '?'}" + (f", values {values})" if values else ")")


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
        if args.configmap:
            base = _configmap_profiles(api, args.configmap, args.builtin_profiles is not False)
        else:
            base = _profiles(settings)
        namespaced = settings.namespaced_profiles
        resources = list_profile_resources(api, namespaced=namespaced, notes=notes) if args.profile_resources else []
        resolver = offline_resolver(base, resources, namespaced_enabled=namespaced)
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
    """Profiles and profile resources judged as the server would (the resources as `kubectl apply` would be)."""
    settings = settings_from(args)
    found = read_profile_documents(_validate_texts(args.path))
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
        raise ProfileError(problems)
    print(f"{args.path}: {len(valid)} valid profile(s): {', '.join(valid) or '(none)'}", file=stdout)
    return EXIT_OK


def cmd_profiles_export(args: argparse.Namespace, stdout: TextIO) -> int:
    """The profiles as profile documents, or as ClusterSidecarProfile manifests."""
    if args.configmap:
        from sidecar_injector.cluster.kube import KubeConfigError, api_client

        try:
            profiles = _configmap_profiles(api_client(args.kubeconfig, args.context), args.configmap, False)
        except KubeConfigError as exc:
            raise CliError(str(exc)) from None
    else:
        profiles = _profiles(settings_from(args))
    unknown = [name for name in args.names if name not in profiles]
    if unknown:
        raise CliError(f"unknown profile(s) {', '.join(unknown)}; available: {', '.join(profiles.names())}")
    documents = []
    for name in args.names or profiles.names():
        profile = profiles[name]
        if args.as_crd:
            documents.append(resource_from_profile(profile, CLUSTER))
        else:
            documents.append({"name": profile.name, **profile_spec(profile)})
    _write_output(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False), args.output, stdout)
    return EXIT_OK


def cmd_profiles(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.profiles_command == "validate":
        return cmd_profiles_validate(args, stdout, stderr)
    if args.profiles_command == "export":
        return cmd_profiles_export(args, stdout)
    settings = settings_from(args)
    profiles = _profiles(settings)
    if args.profiles_command == "list":
        width = max((len(n) for n in profiles), default=4)
        for name in profiles.names():
            p = profiles[name]
            # parameters a pod may set; * marks the required ones (no default)
            params = ",".join(f"{k}{'*' if v.required else ''}" for k, v in p.parameters.items()) or "-"
            print(
                f"{name:<{width}}  {p.version:<8}  {p.hash}  params: {params}  {profiles.sources[name]}  {p.summary()}",
                file=stdout,
            )
        return EXIT_OK
    if args.name not in profiles:
        raise CliError(f"unknown profile {args.name!r}; available: {', '.join(profiles.names())}")
    profile = profiles[args.name]
    data = profile.model_dump(by_alias=True, exclude_defaults=True)
    data.pop("name", None)
    print(f"# source: {profiles.sources[args.name]}  hash: {profile.hash}", file=stdout)
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
