"""Loading profiles: YAML texts, a directory, the built-in ones; every problem named by file and field."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar_injector.base import yaml_io
from sidecar_injector.profiles.model import Profile


class ProfileError(Exception):
    """A profile source is broken. ``problems`` lists every problem, each naming file and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid profiles:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class ProfileSet(Mapping[str, Profile]):
    """The loaded profiles by name, and where each came from."""

    profiles: Mapping[str, Profile]
    sources: Mapping[str, str]

    def __getitem__(self, name: str) -> Profile:
        return self.profiles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def names(self) -> list[str]:
        return sorted(self.profiles)

    @classmethod
    def of(cls, profiles: Iterable[Profile], source: str = "<memory>") -> ProfileSet:
        items = {p.name: p for p in profiles}
        return cls(items, dict.fromkeys(items, source))


def _describe_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            msg = "unknown field (allowed: " + ", ".join(sorted(_allowed_keys())) + ")"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        # one error from the cross-field checks holds one problem per line
        lines += [f"{loc}: {line}" if loc else line for line in msg.splitlines()]
    return lines


@cache
def _allowed_keys() -> frozenset[str]:
    return frozenset(field.alias or name for name, field in Profile.model_fields.items())


def parse_profiles(text: str, source: str) -> list[Profile]:
    """Every profile in a YAML text (one profile per document). Raises ProfileError."""
    try:
        documents = yaml_io.load_all(text)
    except yaml.YAMLError as exc:
        raise ProfileError([f"{source}: not valid YAML: {exc}"]) from None
    profiles: list[Profile] = []
    problems: list[str] = []
    for number, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        profile, doc_problems = document_profile(doc, f"{source} (document {number})" if len(documents) > 1 else source)
        problems += doc_problems
        if profile is not None:
            profiles.append(profile)
    if problems:
        raise ProfileError(problems)
    return profiles


def document_profile(doc: Any, where: str) -> tuple[Profile | None, list[str]]:
    """One YAML document read as a plain profile: the profile, or None and its problems, each
    prefixed with ``where`` (the file and document) and the profile's name when it has one."""
    if not isinstance(doc, Mapping):
        return None, [f"{where}: a profile must be a mapping, got {type(doc).__name__}"]
    if "apiVersion" in doc or "kind" in doc:
        # a Kubernetes object (a SidecarProfile, a Deployment): one line, not every field of it as unknown
        kind = doc.get("kind")
        line = (
            f"{where}: a {kind if isinstance(kind, str) else 'Kubernetes'} object, not a profile: the server's "
            "profiles directory (the chart's ConfigMap) holds plain profiles; apply SidecarProfiles and "
            "ClusterSidecarProfiles with kubectl (the offline commands take them too)"
        )
        return None, [line]
    if isinstance(doc.get("name"), str):
        where += f" profile {doc['name']!r}"
    try:
        return validate_profile(doc), []
    except ProfileError as exc:
        return None, [f"{where}: {line}" for line in exc.problems]


def validate_profile(document: Mapping[str, Any]) -> Profile:
    """One profile from its parsed document. Raises ProfileError, one ``field: problem`` per line."""
    try:
        return Profile.model_validate(document)
    except ValidationError as exc:
        raise ProfileError(_describe_validation_error(exc)) from None


def _merge(sources: Iterable[tuple[str, str]], problems: list[str]) -> tuple[dict[str, Profile], dict[str, str]]:
    profiles: dict[str, Profile] = {}
    origin: dict[str, str] = {}
    for source, text in sources:
        try:
            found = parse_profiles(text, source)
        except ProfileError as exc:
            problems += exc.problems
            continue
        for profile in found:
            if profile.name in profiles:
                problems.append(f"{source}: profile {profile.name!r} is already defined in {origin[profile.name]}")
                continue
            profiles[profile.name] = profile
            origin[profile.name] = source
    return profiles, origin


def _profile_files(directory: Path) -> list[Path]:
    # Hidden entries are skipped: a mounted ConfigMap keeps its real files in `..data/`.
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def directory_fingerprint(directory: Path) -> str:
    """A digest of the profile files in ``directory`` (names and contents): changes when they do."""
    digest = hashlib.sha256()
    try:
        for path in _profile_files(directory):
            digest.update(path.name.encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError as exc:
                digest.update(f"unreadable: {exc}".encode())
            digest.update(b"\0")
    except OSError as exc:
        digest.update(f"no directory: {exc}".encode())
    return digest.hexdigest()


def _directory_texts(directory: Path, problems: list[str]) -> list[tuple[str, str]]:
    if not directory.is_dir():
        problems.append(f"{directory}: profiles directory does not exist or is not a directory")
        return []
    texts = []
    for path in _profile_files(directory):
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
    return texts


@cache
def builtin_profiles() -> ProfileSet:
    """The profiles shipped in the package (``sidecar_injector/builtin_profiles/*.yaml``)."""
    package = resources.files("sidecar_injector") / "builtin_profiles"
    texts = sorted(
        (f"builtin:{entry.name}", entry.read_text(encoding="utf-8"))
        for entry in package.iterdir()
        if entry.name.endswith((".yaml", ".yml"))
    )
    problems: list[str] = []
    profiles, origin = _merge(texts, problems)
    if problems:  # a broken built-in is a bug in this package, never a user error
        raise ProfileError(problems)
    return ProfileSet(profiles, origin)


def load_directory(directory: Path) -> ProfileSet:
    """Profiles from ``directory/*.yaml|*.yml``. Raises ProfileError listing every problem."""
    problems: list[str] = []
    profiles, origin = _merge(_directory_texts(directory, problems), problems)
    if problems:
        raise ProfileError(problems)
    return ProfileSet(profiles, origin)


def _overlaid(extra: ProfileSet | None, include_builtin: bool) -> ProfileSet:
    """The built-in profiles (if included) with ``extra`` on top: same name, ``extra`` wins."""
    base = builtin_profiles() if include_builtin else ProfileSet({}, {})
    extra = extra or ProfileSet({}, {})
    return ProfileSet({**base.profiles, **extra.profiles}, {**base.sources, **extra.sources})


def profiles_from_texts(texts: Iterable[tuple[str, str]], *, include_builtin: bool = True) -> ProfileSet:
    """Built-in profiles overlaid with those in ``(source, yaml text)`` pairs (e.g. a ConfigMap's data)."""
    problems: list[str] = []
    profiles, origin = _merge(texts, problems)
    if problems:
        raise ProfileError(problems)
    return _overlaid(ProfileSet(profiles, origin), include_builtin)


def load_profiles(profiles_dir: Path | None, *, include_builtin: bool = True) -> ProfileSet:
    """Built-in profiles overlaid with those in ``profiles_dir`` (same name: the directory wins)."""
    return _overlaid(load_directory(profiles_dir) if profiles_dir is not None else None, include_builtin)
