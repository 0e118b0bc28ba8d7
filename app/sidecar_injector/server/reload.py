"""Live reload of the serving certificate and the profiles, without a restart.

cert-manager, a Secret update or a ConfigMap edit rewrite the mounted files in place (the
kubelet swaps a ``..data`` symlink, so every file of the volume changes at once). The
:class:`Reloader` watches the directories that hold them (inotify through ``watchfiles``,
plus a periodic check in case an event is missed), compares content digests, and:

* **certificate**: checks the new pair in a scratch context first, then loads it into the
  live ``SSLContext``. New TLS handshakes get the new certificate; connections already
  open keep theirs, so nothing in flight fails. A broken or half-written pair is refused
  and the old certificate stays in use until a good pair appears.
* **profiles**: loads the directory again; the new set replaces the old as a whole (one
  reference swap in the event loop, so an admission sees either set, never a mix). A
  broken update keeps the last good set, logs every problem with file and field, and is
  exposed by a metric and in ``/readyz``'s body (readiness itself stays true: the webhook
  still answers correctly with the last good set, and failing every replica at once would
  turn one bad edit into an outage).

The reloader runs under the server's :class:`~sidecar_injector.runtime.supervise.Supervisor`
(job ``reloader``): a failure of the watcher falls back to periodic checks, a failure
it does not expect (a bug in a check) ends :meth:`Reloader.run`, and the supervisor logs
it, counts it and runs it again after a backoff; one that keeps failing turns readiness
off, so a replica that can no longer rotate its certificate leaves the Service long
before that certificate expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from pathlib import Path

from watchfiles import awatch

from sidecar_injector.profiles.loading import ProfileError, ProfileSet, directory_fingerprint, load_profiles
from sidecar_injector.runtime.interfaces import ProfileStore
from sidecar_injector.runtime.logs import get_logger
from sidecar_injector.runtime.metrics import Metrics
from sidecar_injector.runtime.settings import Settings
from sidecar_injector.webhook.tls import cert_not_after

#: how often the files are compared even without a file-system event
CHECK_INTERVAL_SECONDS = 30.0
#: a pair that fails to load right after a change is retried this often (files may still be landing)
_RETRY_DELAYS = (0.2, 0.5, 1.0)


def _files_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            digest.update(f"unreadable: {exc}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


class Reloader:
    """Watches the certificate and the profiles directory and reloads what changed."""

    def __init__(
        self,
        settings: Settings,
        store: ProfileStore,
        metrics: Metrics,
        ssl_context: ssl.SSLContext | None,
        *,
        check_interval: float = CHECK_INTERVAL_SECONDS,
        debounce_ms: int = 300,
    ):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.ssl_context = ssl_context
        self.check_interval = check_interval
        self.debounce_ms = debounce_ms
        self.log = get_logger()
        self._cert_paths = (
            (settings.cert_file, settings.key_file)
            if ssl_context is not None and settings.cert_file and settings.key_file
            else None
        )
        self._cert_digest = _files_digest(*self._cert_paths) if self._cert_paths else ""
        self._profiles_digest = directory_fingerprint(settings.profiles_dir) if settings.profiles_dir else ""

    def watched_directories(self) -> list[Path]:
        dirs: set[Path] = set()
        if self._cert_paths:
            dirs.update(path.parent for path in self._cert_paths)
        if self.settings.profiles_dir is not None:
            dirs.add(self.settings.profiles_dir)
        return sorted(d for d in dirs if d.is_dir())

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set. A failed reload keeps the old state; a watcher that breaks
        is replaced by periodic checks; an exception out of a check (a bug) is the supervisor's."""
        directories = self.watched_directories()
        if not directories:
            return
        self.log.info("watching for certificate and profile changes", extra={"directories": ",".join(map(str, directories))})
        changes = awatch(
            *directories,
            watch_filter=None,  # digests decide what changed; kubelet's ..data swaps must not be filtered
            debounce=self.debounce_ms,
            stop_event=stop,
            rust_timeout=int(self.check_interval * 1000),
            yield_on_timeout=True,
            ignore_permission_denied=True,
        )
        async with contextlib.aclosing(changes):
            while True:
                try:
                    await anext(changes)
                except StopAsyncIteration:  # stop was set
                    return
                except Exception:  # the watcher itself broke: fall back to periodic checks
                    self.log.exception("file watcher failed; checking for changes every %.0f s", self.check_interval)
                    break
                await self.check()  # outside the try: a failing check is not a broken watcher
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.check_interval)
            except TimeoutError:
                await self.check()

    async def check(self) -> None:
        """Reload whatever changed since the last check."""
        if self._cert_paths and _files_digest(*self._cert_paths) != self._cert_digest:
            for delay in (0.0, *_RETRY_DELAYS):
                await asyncio.sleep(delay)
                if self.reload_certificate():
                    break
        if self.settings.profiles_dir is not None:
            fingerprint = directory_fingerprint(self.settings.profiles_dir)
            if fingerprint != self._profiles_digest:
                self._profiles_digest = fingerprint
                await self.reload_profiles()

    def reload_certificate(self) -> bool:
        """Load the certificate files into the live context if they form a usable pair."""
        assert self._cert_paths is not None and self.ssl_context is not None
        cert, key = self._cert_paths
        digest = _files_digest(cert, key)
        try:
            # a scratch context first: a mismatched pair must never reach the live one
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
            self.ssl_context.load_cert_chain(cert, key)
            expiry = cert_not_after(cert)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.metrics.reloads.labels("certificate", "error").inc()
            self.log.error(
                "new certificate not loaded; the previous one stays in use",
                extra={"cert_file": str(cert), "key_file": str(key), "error": str(exc)},
            )
            return False
        self._cert_digest = digest
        self.metrics.reloads.labels("certificate", "ok").inc()
        self.metrics.cert_expiry.set(expiry.timestamp())
        self.log.info("certificate reloaded", extra={"cert_file": str(cert), "not_after": expiry.isoformat()})
        return True

    async def reload_profiles(self) -> bool:
        """Load the profiles again; on any problem keep the last good set."""
        settings = self.settings
        try:
            profiles: ProfileSet = await asyncio.to_thread(
                load_profiles, settings.profiles_dir, include_builtin=settings.builtin_profiles
            )
        except (ProfileError, OSError) as exc:  # OSError: the folder cannot be listed (gone, no permission)
            problems = exc.problems if isinstance(exc, ProfileError) else [f"{settings.profiles_dir}: cannot read: {exc}"]
            self.store.error = str(exc) if isinstance(exc, ProfileError) else problems[0]
            self.metrics.reloads.labels("profiles", "error").inc()
            self.metrics.profiles_reload_error.set(1)
            self.log.error(
                "profiles not reloaded; the last good set stays in use",
                extra={"problems": "; ".join(problems[:20]), "count": len(problems)},
            )
            return False
        old = self.store.current
        self.store.current = profiles
        self.store.error = None
        self.metrics.reloads.labels("profiles", "ok").inc()
        self.metrics.profiles_reload_error.set(0)
        self.metrics.profiles_loaded.set(len(profiles))
        changed = sorted(n for n in profiles if n not in old or old[n].hash != profiles[n].hash)
        removed = sorted(n for n in old if n not in profiles)
        self.log.info(
            "profiles reloaded",
            extra={
                "profiles": ",".join(profiles.names()),
                "changed": ",".join(changed),
                "removed": ",".join(removed),
            },
        )
        return True
