"""The ``sidecar-injector`` command line: its arguments (one flag per setting) and the settings they make."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

from sidecar_injector import __version__
from sidecar_injector.runtime.settings import ENV_PREFIX, Settings

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


def _fail_on_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on",
        choices=["skipped", "warning"],
        help="exit 1 when a requested profile was not injected into some pod (skipped), or when that or any "
        "warning happened (warning); without it the exit code says only whether a pod was denied (strict mode)",
    )


def _profiles_namespace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        dest="target_namespace",
        help="the namespace of a SidecarProfile that has none (default: default, as kubectl apply)",
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
        action="append",
        help="YAML file with one or more documents, or - for stdin (repeatable); SidecarProfile/ClusterSidecarProfile "
        "objects in it are used as the server would (a SidecarProfile for the objects of its own namespace; one "
        "without a namespace is in --namespace, else default, as kubectl apply creates it)",
    )
    inject.add_argument("-o", "--output", help="write the result here instead of stdout")
    inject.add_argument(
        "--namespace", dest="target_namespace", help="namespace the objects are created in (default: their own)"
    )
    _namespace_flags(inject)
    _fail_on_flag(inject)
    _setting_flags(inject, (*PROFILE_SETTINGS, *RESOURCE_SETTINGS, *POLICY_SETTINGS))

    explain = commands.add_parser(
        "explain",
        help="why each pod (template) gets what it gets: decision, warnings, values and their sources, what is added",
        description="Explain the injection decision for the pods and pod templates of a file (-f, offline, as "
        "`inject` sees them) or of one live object (KIND/NAME -n NAMESPACE, read from the cluster with the "
        "profiles of the running webhook's ConfigMap).",
    )
    explain.add_argument("target", nargs="?", metavar="KIND/NAME", help="a live object, e.g. deployment/web")
    explain.add_argument(
        "-f", "--filename", action="append", help="YAML file with one or more documents, or - for stdin (repeatable)"
    )
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
    _fail_on_flag(explain)
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
    listing = profile_commands.add_parser(
        "list",
        help="the available profiles, as a table",
        description="The profiles a pod may ask for: built-ins and --profiles-dir (plain profiles, "
        "ClusterSidecarProfiles and SidecarProfiles, shown as NAMESPACE/NAME).",
    )
    _profiles_namespace_flag(listing)
    _setting_flags(listing, (*PROFILE_SETTINGS, *RESOURCE_SETTINGS))
    show = profile_commands.add_parser("show", help="one profile as YAML")
    show.add_argument("name", help="a profile's name, or NAMESPACE/NAME for a SidecarProfile")
    _profiles_namespace_flag(show)
    _setting_flags(show, (*PROFILE_SETTINGS, *RESOURCE_SETTINGS))
    validate = profile_commands.add_parser(
        "validate",
        help="check profiles: a file or a directory of them, plain or as SidecarProfile/ClusterSidecarProfile objects",
        description="Check profiles as the server would load them: profile files, and SidecarProfile / "
        "ClusterSidecarProfile objects (refused as `kubectl apply` would refuse them, with the same messages: "
        "no SidecarProfile may take the name of a cluster-level profile, which the built-in profiles are too "
        "unless --no-builtin-profiles). Other Kubernetes objects (a Deployment next to its profiles) are "
        "skipped with a note. Exit 1 when a document is not usable, 2 on a usage error.",
    )
    validate.add_argument("path", type=Path, metavar="FILE|DIR")
    _profiles_namespace_flag(validate)
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
    export.add_argument(
        "--as-policy",
        action="store_true",
        help="policy mode: MutatingAdmissionPolicy + ValidatingAdmissionPolicy and their bindings per profile "
        "(admissionregistration.k8s.io/v1, Kubernetes >= 1.36), compiled with the injection settings given",
    )
    export.add_argument(
        "--policy-namespace-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --as-policy: bind only to namespaces with this label (repeatable; a staged roll-out)",
    )
    export.add_argument("--configmap", metavar="NAMESPACE/NAME", help="the profiles of this ConfigMap (the chart's)")
    export.add_argument("--kubeconfig", help="kubeconfig file, with --configmap")
    export.add_argument("--context", help="kubeconfig context, with --configmap")
    export.add_argument("-o", "--output", help="write them here instead of stdout")
    _setting_flags(export, (*PROFILE_SETTINGS, *POLICY_SETTINGS, "namespace", "excluded_namespaces"))
    stale = profile_commands.add_parser(
        "stale",
        help="pods of the cluster with an older or removed profile, or missing one (exit 1 if any); --restart rolls them",
        description="List running pods whose sidecar.io/status records a profile hash that differs from the "
        "current profile, or a profile that no longer exists (stale), and pods the current rules would inject "
        "that lack a profile (missed: created while the webhook was unavailable, or before their namespace "
        "opted in), decided by the same core as admission. Current means what live explain reads: the webhook's "
        f"ConfigMap (--configmap, default {DEFAULT_PROFILES_CONFIGMAP}; --local-profiles: this CLI's built-ins and "
        "--profiles-dir instead), with the cluster's ClusterSidecarProfiles and SidecarProfiles; it says which "
        "source and versions it compared; pass the webhook's policy settings (--default-profiles, "
        "--cluster-wide, --excluded-namespaces, SIDECAR_INJECTOR_NAMESPACE) for the missed pods. With --restart, "
        "the owning Deployments, StatefulSets and DaemonSets are restarted as `kubectl rollout restart` does, "
        "one at a time, each rollout awaited, rate-limited; owners mid-rollout are skipped; bare pods and Jobs "
        "are listed, never touched.",
    )
    scope = stale.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", dest="target_namespace", help="only this namespace (default: all)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (the default)")
    source = stale.add_mutually_exclusive_group()
    source.add_argument(
        "--configmap",
        metavar="NAMESPACE/NAME",
        help=f"compare with the profiles in the webhook's ConfigMap (default {DEFAULT_PROFILES_CONFIGMAP}, the "
        "chart's, as live explain; when that default is missing the CLI's local profiles are used with a note, "
        "and --restart is refused)",
    )
    source.add_argument(
        "--local-profiles",
        action="store_true",
        help="compare with this CLI's own profiles (built-ins and --profiles-dir) instead of the webhook's ConfigMap",
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
