"""The profiles the offline commands read (built-ins, ``--profiles-dir`` with its profile
resources, the webhook's ConfigMap) and the small input/output helpers the commands share."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sidecar_injector.cli.parser import CliError
from sidecar_injector.profiles.catalog import (
    ProfileResolver,
    offline_resolver,
    unused_resources,
)
from sidecar_injector.profiles.loading import ProfileError, ProfileSet, builtin_profiles, load_profiles, profiles_from_texts
from sidecar_injector.profiles.resources import read_profile_documents
from sidecar_injector.runtime.settings import Settings


def server_profiles(settings: Settings) -> ProfileSet:
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


def local_profiles(settings: Settings, namespace: str | None = None) -> LocalProfiles:
    """Built-ins overlaid with the directory's plain profiles, and the directory's profile resources
    (a SidecarProfile without a namespace in ``namespace``, else ``default``). Raises ProfileError."""
    base = builtin_profiles() if settings.builtin_profiles else ProfileSet({}, {})
    directory = settings.profiles_dir
    if directory is None:
        return LocalProfiles(base, [], [])
    if not directory.is_dir():
        raise ProfileError([f"{directory}: profiles directory does not exist or is not a directory"])
    found = read_profile_documents(read_texts(directory), namespace)
    if found.problems:
        raise ProfileError(found.problems)
    merged = ProfileSet({**base.profiles, **found.profiles}, {**base.sources, **found.sources})
    return LocalProfiles(merged, found.resources, found.notes)


def read_input(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{filename}: cannot read: {exc}") from None


def write_output(text: str, path: str | None, stdout: TextIO) -> None:
    """``text`` to the file ``path`` (``-o``), or to stdout without one."""
    if not path:
        stdout.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc}") from None


def configmap_profiles(api: Any, ref: str, include_builtin: bool) -> ProfileSet:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise CliError(f"--configmap {ref!r}: expected NAMESPACE/NAME")
    from sidecar_injector.cluster.listing import configmap_profile_texts

    return profiles_from_texts(configmap_profile_texts(api, namespace, name), include_builtin=include_builtin)


def table(rows: Sequence[tuple[str, ...]], stdout: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=stdout)


def read_texts(path: Path) -> list[tuple[str, str]]:
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


def suggest(name: str, available: Sequence[str]) -> str:
    """``did you mean X?`` (the closest available name) and what is available."""
    import difflib

    close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}available: {', '.join(available) or '(none)'}"


def local_view(settings: Settings, namespace: str | None, stderr: TextIO) -> ProfileResolver:
    """The local profiles (built-ins, --profiles-dir with its profile resources) resolved as the server would."""
    local = local_profiles(settings, namespace)
    for note in local.notes:
        print(f"note: {note}", file=stderr)
    resolver = offline_resolver(
        local.base, [obj for _, obj in local.resources], namespaced_enabled=settings.namespaced_profiles
    )
    for line in unused_resources(resolver.resolution):
        print(f"warning: {line}", file=stderr)
    return resolver
