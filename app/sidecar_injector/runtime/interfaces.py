"""What the web layer and the server's services share: two small stores and two protocols.

The web layer answers admissions with a :class:`ProfileStore` and reports readiness from a
:class:`Lifecycle` (which sees the background jobs' health as a :class:`JobHealth`); the
namespace cache, the event recorder and the profile resources (which need the Kubernetes
client) are handed to it as a :class:`NamespaceSource`, an :class:`EventSink` and a
:class:`ProfileSource`. Both
sides import this module, so the web layer never imports the Kubernetes client modules and
the reloader never imports the web layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import NamespaceFacts
from sidecar_injector.profiles.loading import ProfileSet

#: a background job of the server: runs from startup until the event is set at shutdown
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class NamespaceUnavailable(Exception):
    """The namespace could not be read: the API server is unreachable, too slow or failing."""


class NamespaceSource(Protocol):
    """Namespace labels/annotations (``sidecar_injector.cluster.namespaces.NamespaceCache``)."""

    synced: bool

    def cached(self, name: str) -> NamespaceFacts | None: ...

    def lookup(self, name: str) -> NamespaceFacts | None:
        """Read one namespace now; raises :class:`NamespaceUnavailable` when the API cannot answer."""
        ...


class ProfileSource(Protocol):
    """Each namespace's profiles, with the profile resources (``cluster.profile_sources.ProfileResources``)."""

    def profiles_for(self, namespace: str | None) -> ProfileSet:
        """What a pod of ``namespace`` may ask for: its SidecarProfiles, the cluster's and the injector's own."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """Whether the server may report ready (the first list is done, or its wait is over), and a note."""
        ...

    def admission_problems(self, obj: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Why a profile resource being applied is refused, and warnings for one that is not."""
        ...


class EventSink(Protocol):
    """Where decisions become Kubernetes Events (``sidecar_injector.cluster.events.EventRecorder``); never blocks."""

    def record(self, decision: Decision, pod: Any, namespace: str, *, dry_run: bool = False) -> bool: ...


@dataclass
class ProfileStore:
    """The profiles the server answers with; replaced as a whole, never mutated."""

    current: ProfileSet
    #: why the profiles on disk were not loaded (the last good set is in use), or None
    error: str | None = None


class JobHealth(Protocol):
    """How the background jobs are doing (``sidecar_injector.runtime.supervise.Supervisor``)."""

    def failing(self) -> dict[str, str]:
        """The jobs that keep failing past the threshold, with why."""
        ...

    def states(self) -> dict[str, str]:
        """Every job's state in a few words (``ok``, ``restarting...``, ``failing: ...``)."""
        ...


@dataclass
class Lifecycle:
    """Readiness as the server's lifecycle sees it: false once shutdown has begun or while a background job keeps failing."""

    draining: bool = False
    #: the supervisor of the background jobs (None: no supervised jobs)
    jobs: JobHealth | None = None

    def failing_jobs(self) -> dict[str, str]:
        """The background jobs that keep failing, with why (readiness is off while there is one)."""
        return self.jobs.failing() if self.jobs is not None else {}

    def job_states(self) -> dict[str, str]:
        """Every background job's state, for ``/readyz?verbose``."""
        return self.jobs.states() if self.jobs is not None else {}
