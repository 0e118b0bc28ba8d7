"""The JSON Patch an injection makes, built profile by profile (:class:`PatchPlan`), and the status it records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sidecar_injector.base import keys
from sidecar_injector.base.text import printable
from sidecar_injector.core.decision import MAX_LISTED
from sidecar_injector.core.inputs import NamespaceFacts
from sidecar_injector.core.pod_shape import PodResources, meshes
from sidecar_injector.profiles.checks import declared_ports
from sidecar_injector.profiles.model import RenderedProfile

#: the API server refuses a pod whose annotations (keys + values) exceed 256 KiB
MAX_ANNOTATION_BYTES = 256 * 1024


def escape_pointer(token: str) -> str:
    """RFC 6901 escaping of one JSON Pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def recorded_profiles(raw: Any) -> dict[str, Any] | None:
    """The ``profiles`` map of a ``sidecar.io/status`` value, entries as found; None if unreadable."""
    try:
        data = orjson.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    recorded = data.get("profiles") if isinstance(data, dict) else None
    return recorded if isinstance(recorded, dict) else None


def read_status(raw: Any) -> tuple[dict[str, Any], str | None]:
    """The profiles recorded in ``sidecar.io/status`` and, if it is unreadable, why."""
    if raw is None:
        return {}, None
    recorded = recorded_profiles(raw)
    if recorded is None:
        return {}, f"{keys.STATUS} is unreadable; treating the pod as not injected yet"
    # Entries are carried over into the status we write: keep only the fields we write, with
    # their types, so a hand-edited annotation cannot smuggle anything (or any depth) through.
    return {name: _status_entry(entry) for name, entry in recorded.items()}, None


def _status_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {}
    clean: dict[str, Any] = {}
    for field_name in ("version", "hash", "values"):
        if isinstance(entry.get(field_name), str):
            clean[field_name] = entry[field_name]
    if isinstance(entry.get("native"), bool):
        clean["native"] = entry["native"]
    for field_name in ("containers", "initContainers", "volumes"):
        items = entry.get(field_name)
        if isinstance(items, list):
            clean[field_name] = [item for item in items if isinstance(item, str)]
    return clean


class _App:
    """An application container of the pod, and what the plan adds to it."""

    def __init__(self, index: int, container: dict[str, Any]):
        self.index = index
        self.name: str = container["name"]
        self.has_mounts = isinstance(container.get("volumeMounts"), list)
        self.has_env = isinstance(container.get("env"), list)
        self.paths: list[str] = [
            m["mountPath"]
            for m in container.get("volumeMounts") or []
            if isinstance(m, dict) and isinstance(m.get("mountPath"), str)
        ]
        self.envs: set[str] = {
            e["name"] for e in container.get("env") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)
        }
        self.new_mounts: list[dict[str, Any]] = []
        self.new_env: list[dict[str, Any]] = []


def _path_clash(path: str, taken: list[str]) -> str | None:
    """The mount path already in ``taken`` that ``path`` equals, lies inside or contains."""
    new = path.rstrip("/") or "/"
    for old_path in taken:
        old = old_path.rstrip("/") or "/"
        if new == old or new.startswith(old + "/") or old.startswith(new + "/") or "/" in (new, old):
            return old_path
    return None


class PatchTooLarge(Exception):
    """The patch being planned has outgrown the room the pod has left."""


class PatchPlan:
    """What the patch adds, profile by profile, and what the pod looks like with it.

    A profile is added whole or not at all: :meth:`add_profile` first checks everything
    it would add against the pod and the profiles added before it, and changes nothing
    when anything conflicts. :meth:`ops` then writes the JSON Patch in an order where every
    operation's path is valid when it is applied.

    With a ``room`` (bytes), :meth:`add_profile` raises :class:`PatchTooLarge` as soon as
    what it adds to the application containers — one copy per container, the part of a
    patch that grows with the pod — outgrows it (counted from the encoded size of the
    values alone, a lower bound of the patch's), so the work spent on a pod that cannot
    be injected is bounded by the room, not by the number of its containers.
    """

    def __init__(
        self,
        pod: dict[str, Any],
        spec: dict[str, Any],
        annotations: dict[str, Any],
        status: dict[str, Any],
        namespace: NamespaceFacts | None,
        room: int | None = None,
    ):
        self._room = room
        self._size = 0  # a lower bound of the encoded size of what is added to the app containers
        self._spec = spec
        self._metadata_exists = isinstance(pod.get("metadata"), dict)
        self._annotations_exist = isinstance((pod.get("metadata") or {}).get("annotations"), dict)
        self._annotations = dict(annotations)
        self._new_annotations: dict[str, str] = {}
        self._status = dict(status)
        self.notes: list[str] = []
        containers: list[dict[str, Any]] = spec["containers"]
        init: list[dict[str, Any]] = spec.get("initContainers") or []
        ephemeral: list[dict[str, Any]] = spec.get("ephemeralContainers") or []
        self._containers = containers
        self._init = init
        self.names = {c["name"] for c in (*containers, *init, *ephemeral)}
        self.volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v.get("name"), str)}
        #: (port, protocol) -> what binds it, for the messages
        self.ports: dict[tuple[int, str], str] = {}
        for c in (*containers, *(i for i in init if i.get("restartPolicy") == "Always")):
            for port in declared_ports(c):
                self.ports.setdefault(port, f"container {printable(c['name'])}")
        for mesh, mesh_ports in meshes(pod, spec, annotations, namespace).items():
            for number in mesh_ports:
                self.ports.setdefault((number, "TCP"), mesh)
        self.host_network = spec.get("hostNetwork") is True
        self.resources = PodResources.of(spec)
        injected_before = {
            n
            for entry in status.values()
            if isinstance(entry, dict) and isinstance(entry.get("containers"), list)
            for n in entry["containers"]
            if isinstance(n, str)
        }
        # application containers: the pod's own, not sidecars an earlier injection added
        self.apps = [_App(i, c) for i, c in enumerate(containers) if c["name"] not in injected_before]
        self.new_volumes: list[dict[str, Any]] = []
        secrets = spec.get("imagePullSecrets")
        self._pull_secrets_exist = isinstance(secrets, list)
        # decide() skips a pod whose imagePullSecrets is not a list of objects; a name that is
        # not a string (the API server would refuse it) matches no profile's secret
        names = (s.get("name") for s in (secrets if isinstance(secrets, list) else ()) if isinstance(s, dict))
        self.pull_secrets: set[str] = {n for n in names if isinstance(n, str)}
        self.new_pull_secrets: list[dict[str, str]] = []
        self.init_first: list[dict[str, Any]] = []
        self.init_last: list[dict[str, Any]] = []
        self.containers_first: list[dict[str, Any]] = []
        self.containers_last: list[dict[str, Any]] = []

    # -- checking -------------------------------------------------------------------------

    def _conflicts(self, profile: RenderedProfile, native: bool) -> list[str]:
        problems: list[str] = []
        bound = profile.bound_ports
        if self.host_network and bound and profile.profile.host_network != "allowed":
            ports = ", ".join(f"{port}/{printable(proto)}" for port, proto in bound[:MAX_LISTED])
            return [
                (
                    f"the pod uses the host network, where its ports ({ports}) would bind on the node's address "
                    "(a profile that is safe there says hostNetwork: allowed)"
                )
            ]
        problems += [f"volume {v['name']} already exists" for v in profile.volumes if v["name"] in self.volumes]
        problems += [
            f"container {c['name']} already exists"
            for c in (*profile.init_containers, *profile.containers)
            if c["name"] in self.names
        ]
        for port, proto in bound:
            owner = self.ports.get((port, proto))
            if owner is not None:
                problems.append(f"port {port}/{printable(proto)} is already used by {owner}")
        for app in self.apps:
            for mount in profile.app_volume_mounts:
                path = mount["mountPath"]
                clash = _path_clash(path, app.paths)
                if clash is None:
                    continue
                if clash.rstrip("/") == path.rstrip("/"):
                    problems.append(f"container {printable(app.name)} already mounts {printable(path, 120)}")
                else:  # a mount inside another one (or around it) shadows or writes through it
                    problems.append(
                        f"container {printable(app.name)} already mounts {printable(clash, 120)}, "
                        f"which overlaps {printable(path, 120)}"
                    )
        if not problems and self.resources is not None:
            added = list(profile.native_containers if native else profile.containers)
            problems += self.resources.problems(*self._candidate_lists(profile, native), added)
        return problems

    def _candidate_lists(self, profile: RenderedProfile, native: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The pod's (app containers, init containers in order) if the profile were added."""
        init_new = list(profile.init_containers) + (list(profile.native_containers) if native else [])
        first = profile.profile.placement == "first"
        init = [*self.init_first, *(init_new if first else []), *self._init, *self.init_last, *([] if first else init_new)]
        containers = [*self._containers, *self.containers_first, *self.containers_last]
        if not native:
            containers += profile.containers
        return containers, init

    # -- adding -----------------------------------------------------------------------------

    def add_profile(self, profile: RenderedProfile, native: bool) -> list[str]:
        """Add the whole profile and return [], or add nothing and return every conflict."""
        problems = self._conflicts(profile, native)
        if problems:
            return problems
        first = profile.profile.placement == "first"
        init_list = self.init_first if first else self.init_last
        container_list = self.containers_first if first else self.containers_last
        added: dict[str, list[str]] = {"containers": [], "initContainers": [], "volumes": []}
        for volume in profile.volumes:
            self.new_volumes.append(volume)
            self.volumes.add(volume["name"])
            added["volumes"].append(volume["name"])
        for container in profile.init_containers:
            init_list.append(container)
            added["initContainers"].append(container["name"])
        for container, as_native in zip(profile.containers, profile.native_containers, strict=True):
            if native:
                init_list.append(as_native)
                added["initContainers"].append(container["name"])
            else:
                container_list.append(container)
                added["containers"].append(container["name"])
        if profile.profile.wait_ready and profile.containers and not native:
            self.notes.append(
                f"[{profile.name}] waitReady needs native sidecars, and this pod gets regular ones "
                f'(set {keys.NATIVE_SIDECARS}: "true"): the app may start before the sidecar is ready'
            )
        self.names.update(c["name"] for c in (*profile.init_containers, *profile.containers))
        for container in profile.containers:
            for port in profile.ports[container["name"]]:
                self.ports[port] = f"container {container['name']}"
        for number in profile.profile.local_ports:
            self.ports[(number, "TCP")] = f"profile {profile.name}"
        mounts_size, env_sizes = profile.app_bytes if self._room is not None else (0, (0,) * len(profile.app_env))
        for app in self.apps:
            for mount in profile.app_volume_mounts:
                app.new_mounts.append(mount)
                app.paths.append(mount["mountPath"])
            self._size += mounts_size
            for env, size in zip(profile.app_env, env_sizes, strict=True):
                if env["name"] not in app.envs:  # the pod's own value wins: it is a deliberate override
                    app.new_env.append(env)
                    app.envs.add(env["name"])
                    self._size += size
            if self._room is not None and self._size > self._room:
                raise PatchTooLarge
        for secret in profile.profile.image_pull_secrets:
            if secret not in self.pull_secrets:
                self.pull_secrets.add(secret)
                self.new_pull_secrets.append({"name": secret})
        kept: dict[str, Any] = {}
        for key, value in profile.pod_annotations.items():
            if key not in self._annotations:
                self._annotate(key, value)
            elif self._annotations[key] != value:
                kept[key] = self._annotations[key]
        if kept:
            self.notes.append(_kept_annotations(profile, kept))
        entry: dict[str, Any] = {"version": profile.profile.version, "hash": profile.profile.hash, "native": native}
        if profile.values_hash is not None:
            entry["values"] = profile.values_hash
        self._status[profile.name] = {**entry, **{k: v for k, v in added.items() if v}}
        return []

    def _annotate(self, key: str, value: str) -> None:
        self._annotations[key] = value
        self._new_annotations[key] = value

    def write_status(self, skipped: Mapping[str, str] | None = None) -> None:
        """``sidecar.io/status`` (:func:`status_text`): what is injected, and the requested profiles that were not."""
        self._annotate(keys.STATUS, status_text(self._status, skipped))

    def annotations_fit(self) -> bool:
        """Whether the pod's annotations, once patched, stay within the API server's limit."""
        return annotations_fit(self._annotations)

    # -- the patch --------------------------------------------------------------------------

    def ops(self) -> list[dict[str, Any]]:
        """The JSON Patch. Edits of the app containers come first (their indexes are the
        pod's own); containers placed first are inserted after them."""
        ops: list[dict[str, Any]] = []
        for app in self.apps:
            _extend(ops, f"/spec/containers/{app.index}/volumeMounts", app.has_mounts, [], app.new_mounts)
            _extend(ops, f"/spec/containers/{app.index}/env", app.has_env, [], app.new_env)
        _extend(ops, "/spec/volumes", isinstance(self._spec.get("volumes"), list), [], self.new_volumes)
        _extend(
            ops, "/spec/initContainers", isinstance(self._spec.get("initContainers"), list), self.init_first, self.init_last
        )
        _extend(ops, "/spec/containers", True, self.containers_first, self.containers_last)
        _extend(ops, "/spec/imagePullSecrets", self._pull_secrets_exist, [], self.new_pull_secrets)
        ops += _annotation_ops(self._metadata_exists, self._annotations_exist, self._new_annotations)
        return ops


def _annotation_ops(metadata_exists: bool, annotations_exist: bool, new: dict[str, str]) -> list[dict[str, Any]]:
    """Operations adding the annotations ``new``: the map (or the metadata) itself when the pod has none."""
    if not new:
        return []
    if not metadata_exists:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": new}}]
    if not annotations_exist:
        return [{"op": "add", "path": "/metadata/annotations", "value": new}]
    return [{"op": "add", "path": "/metadata/annotations/" + escape_pointer(k), "value": v} for k, v in new.items()]


def status_text(profiles: Mapping[str, Any], skipped: Mapping[str, str] | None = None) -> str:
    """``sidecar.io/status``: ``{"profiles": {...}}`` (what is injected, the key tools parse) and,
    when requested profiles were not injected, ``"skipped": {"name": "why"}`` next to it. A pod
    that got none of its profiles has ``"profiles": {}``."""
    status: dict[str, Any] = {"profiles": dict(profiles)}
    if skipped:
        status["skipped"] = dict(skipped)
    return orjson.dumps(status, option=orjson.OPT_SORT_KEYS).decode()


def skipped_status_patch(
    pod: dict[str, Any], annotations: Mapping[str, Any], skipped: Mapping[str, str], room: int | None
) -> tuple[list[dict[str, Any]], bytes | None]:
    """The patch recording, on a pod that gets nothing injected, its requested profiles that were
    skipped and why (``skipped``), and its JSON: ``sidecar.io/status`` alone, as :func:`status_text`
    writes it, keeping the profiles the pod's status records as injected.

    ``([], None)`` when nothing was skipped, when the pod's status already says exactly that (a
    reinvocation, or a pod created again with it: nothing to write), or when the record would not
    fit the pod's annotations or the ``room`` (bytes) the pod has left.
    """
    if not skipped:
        return [], None
    text = status_text(read_status(annotations.get(keys.STATUS))[0], skipped)
    if annotations.get(keys.STATUS) == text or not annotations_fit({**annotations, keys.STATUS: text}):
        return [], None
    metadata = pod.get("metadata")
    has_annotations = isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict)
    ops = _annotation_ops(isinstance(metadata, dict), has_annotations, {keys.STATUS: text})
    encoded = orjson.dumps(ops)
    return ([], None) if room is not None and len(encoded) > room else (ops, encoded)


def annotations_fit(annotations: Mapping[str, Any]) -> bool:
    """Whether these annotations stay within the API server's limit.

    The API server counts UTF-8 bytes. A character takes at most 4 of them, so counting
    characters settles nearly every pod; only large annotations are encoded to be sure.
    """
    pairs = [(k, v) for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)]
    if sum(len(k) + len(v) for k, v in pairs) * 4 <= MAX_ANNOTATION_BYTES:
        return True
    size = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass")) for k, v in pairs)
    return size <= MAX_ANNOTATION_BYTES


def _extend(ops: list[dict[str, Any]], array: str, exists: bool, first: list[Any], last: list[Any]) -> None:
    """Operations putting ``first`` at the start of the array at ``array`` and ``last`` at its end."""
    if not first and not last:
        return
    if not exists:
        ops.append({"op": "add", "path": array, "value": [*first, *last]})
        return
    ops += [{"op": "add", "path": f"{array}/{i}", "value": item} for i, item in enumerate(first)]
    ops += [{"op": "add", "path": f"{array}/-", "value": item} for item in last]


def _kept_annotations(profile: RenderedProfile, kept: dict[str, Any]) -> str:
    """The note for pod annotations the profile would set and the pod already sets otherwise."""
    own = ", ".join(f"{printable(key, 80)}={printable(str(value), 40)}" for key, value in kept.items())
    text = f"[{profile.name}] the pod's own {own} {'is' if len(kept) == 1 else 'are'} kept"
    wanted = profile.pod_annotations.get("prometheus.io/port")
    if any(key.startswith("prometheus.io/") for key in kept):
        port = next(
            (
                p.get("name") or str(p.get("containerPort"))
                for c in profile.containers
                for p in c.get("ports") or []
                if isinstance(p, dict) and str(p.get("containerPort")) == wanted
            ),
            None,
        )
        where = f"port {port}" if port else "the sidecar's metrics port"
        return (
            text + f": annotation-based scraping will not see the {profile.name} sidecar; scrape {where} with a PodMonitor"
        )
    return text + " (the pod's value wins)"
