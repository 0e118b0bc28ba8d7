"""Prometheus metrics of the webhook, served on their own plain-HTTP port.

A private registry per application (not the process-global one), so several apps — in
tests, say — never mix their numbers.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sidecar_injector.core.decision import Decision
from sidecar_injector.profiles.resources import NAMESPACED
from sidecar_injector.runtime.logs import dropped_lines

#: decision latency buckets, in seconds: the interesting range is 50 µs .. 50 ms
_LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
#: label for requested profile names that do not exist (keeps label cardinality bounded)
UNKNOWN_PROFILE = "_unknown"
#: label for every namespaced SidecarProfile: their names are the tenants' to choose, without bound
NAMESPACED_PROFILE = "_namespaced"
#: label for profile names past :data:`MAX_PROFILE_LABELS` distinct ones (a cap on cluster-scoped names too)
OTHER_PROFILE = "_other"
MAX_PROFILE_LABELS = 200
#: how a namespaced SidecarProfile's source reads in a ProfileSet (``SidecarProfile shop/audit``)
_NAMESPACED_SOURCE = NAMESPACED.kind + " "


class _LogDrops(Collector):
    """``sidecar_injector_log_lines_dropped_total{level}``, read from the log queue's counts when scraped."""

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "sidecar_injector_log_lines_dropped",
            "Log records dropped because the log stream was not keeping up, by level",
            labels=["level"],
        )
        drops = dropped_lines()
        for level in ("debug", "info", "warning", "error", "critical"):
            family.add_metric([level], drops.get(level, 0))
        yield family


class Metrics:
    """The webhook's metrics. Every method is cheap enough for the admission path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sidecar_injector_admission_requests",
            "AdmissionReview requests by outcome (injected, skipped, denied, bad_request, error)",
            ["outcome"],
            registry=self.registry,
        )
        self.injections = Counter(
            "sidecar_injector_injections",
            "Requested profiles by outcome (injected, already_injected, skipped, denied)",
            ["profile", "outcome"],
            registry=self.registry,
        )
        self.skips = Counter(
            "sidecar_injector_skips",
            "Pods admitted without injection, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.warnings = Counter(
            "sidecar_injector_admission_warnings",
            "Admission warnings returned to clients",
            registry=self.registry,
        )
        self.latency = Histogram(
            "sidecar_injector_decision_duration_seconds",
            "Time from receiving a review to having its answer (decode, decide, encode)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.profiles_loaded = Gauge(
            "sidecar_injector_profiles_loaded",
            "Profiles currently loaded",
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "sidecar_injector_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires",
            registry=self.registry,
        )
        self.reloads = Counter(
            "sidecar_injector_reloads",
            "Reloads of changed files, by what (profiles, certificate) and result "
            "(ok, error: the last good set stays in use)",
            ["what", "result"],
            registry=self.registry,
        )
        self.profiles_reload_error = Gauge(
            "sidecar_injector_profiles_reload_error",
            "1 while the profiles on disk are broken and the last good set is in use",
            registry=self.registry,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # pre-create the children of the label values known up front, so dashboards see zeros
        for outcome in ("injected", "skipped", "denied", "bad_request", "error"):
            self._child(self.requests, outcome)
        # the Kubernetes API edges: the namespace cache (cluster/namespaces.py) and Events (cluster/events.py)
        self.namespace_cache_synced = Gauge(
            "sidecar_injector_namespace_cache_synced",
            "1 once the namespace cache has listed the namespaces (it then keeps them current with a watch)",
            registry=self.registry,
        )
        self.namespace_cache_relists = Counter(
            "sidecar_injector_namespace_cache_relists",
            "Full lists of the namespaces, by reason (initial, expired: the watch got 410 Gone, resync: periodic)",
            ["reason"],
            registry=self.registry,
        )
        self.namespace_cache_lookups = Counter(
            "sidecar_injector_namespace_cache_lookups",
            "Namespace lookups by result (hit: from memory, found / not_found: one GET, unavailable: API error or timeout)",
            ["result"],
            registry=self.registry,
        )
        self.kubernetes_events = Counter(
            "sidecar_injector_kubernetes_events",
            "Kubernetes Events by result (sent: a new Event, updated: a series count written, aggregated: "
            "counted into an Event already posted, rate_limited: over the per-object limit, failed: the API "
            "refused or was unreachable, dropped: queue full or shutting down)",
            ["result"],
            registry=self.registry,
        )
        self.event_owner_lookups = Counter(
            "sidecar_injector_event_owner_lookups",
            "Reads of a pod's ReplicaSet or Job to post Events on its Deployment or CronJob, by result "
            "(resolved, not_owned: no such owner, error: forbidden, gone or unreachable, cached)",
            ["result"],
            registry=self.registry,
        )
        # profiles as resources (cluster/profile_sources.py): the watch, and the status written by the Lease holder
        self.profile_resources_synced = Gauge(
            "sidecar_injector_profile_resources_synced",
            "1 once the SidecarProfiles and ClusterSidecarProfiles have been listed (a watch keeps them current)",
            registry=self.registry,
        )
        self.profile_resource_relists = Counter(
            "sidecar_injector_profile_resource_relists",
            "Full lists of the profile resources, by kind and reason (initial, expired, resync)",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.profile_status_leader = Gauge(
            "sidecar_injector_profile_status_leader",
            "1 while this replica holds the Lease and writes the profile resources' status",
            registry=self.registry,
        )
        self.profile_status_writes = Counter(
            "sidecar_injector_profile_status_writes",
            "Status writes of profile resources by result (ok, error: retried)",
            ["result"],
            registry=self.registry,
        )
        self.profile_validations = Counter(
            "sidecar_injector_profile_validations",
            "Profile resources judged at apply time (/validate-profile) by result (accepted, refused)",
            ["result"],
            registry=self.registry,
        )
        # background jobs (runtime/supervise.py): failures of the reloader, informers, event sender, status writer...
        self.background_job_failures = Counter(
            "sidecar_injector_background_job_failures",
            "Unexpected failures of a background job, by job (each is logged with its traceback and the job restarted)",
            ["job"],
            registry=self.registry,
        )
        self.background_job_failing = Gauge(
            "sidecar_injector_background_job_failing",
            "1 while a background job keeps failing past the threshold (readiness is off until it runs again)",
            ["job"],
            registry=self.registry,
        )
        self.registry.register(_LogDrops())
        #: the profile label values handed out so far (bounded by MAX_PROFILE_LABELS)
        self._profile_labels: set[str] = set()
        for result in ("ok", "error"):
            self.profile_status_writes.labels(result)
        for result in ("accepted", "refused"):
            self.profile_validations.labels(result)
        for reason in ("initial", "expired", "resync"):
            self.namespace_cache_relists.labels(reason)
        for result in ("hit", "found", "not_found", "unavailable"):
            self.namespace_cache_lookups.labels(result)
        for result in ("sent", "updated", "aggregated", "rate_limited", "failed", "dropped"):
            self.kubernetes_events.labels(result)
        for result in ("resolved", "not_owned", "error", "cached"):
            self.event_owner_lookups.labels(result)

    def _child(self, counter: Counter, *labels: str) -> Any:
        """``counter.labels(*labels)``, memoised: the lookup costs more than the increment."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def observe_decision(self, decision: Decision, known_profiles: Container[str], seconds: float) -> None:
        self._child(self.requests, decision.outcome).inc()
        self.latency.observe(seconds)
        if decision.warnings:
            self.warnings.inc(len(decision.warnings))
        if decision.outcome == "skipped":
            self._child(self.skips, decision.reason).inc()
        injected = decision.injected
        for name in decision.requested:
            known = name in known_profiles
            profile = self.profile_label(name, known_profiles) if known else UNKNOWN_PROFILE
            if name in injected:
                outcome = "injected"
            elif decision.outcome == "denied":
                outcome = "denied"
            elif known and decision.reason in ("already-injected", "injected"):
                outcome = "already_injected"
            else:
                outcome = "skipped"
            self._child(self.injections, profile, outcome).inc()

    def profile_label(self, name: str, profiles: Container[str]) -> str:
        """The ``profile`` label for a known profile: its name when built in or the injector's or
        cluster-scoped, :data:`NAMESPACED_PROFILE` for a tenant's SidecarProfile, and
        :data:`OTHER_PROFILE` past :data:`MAX_PROFILE_LABELS` distinct names."""
        sources = getattr(profiles, "sources", None)
        source = sources.get(name) if sources is not None else None
        if isinstance(source, str) and source.startswith(_NAMESPACED_SOURCE):
            return NAMESPACED_PROFILE
        labels = self._profile_labels
        if name in labels:
            return name
        if len(labels) >= MAX_PROFILE_LABELS:
            return OTHER_PROFILE
        labels.add(name)  # under the GIL: at worst a few names past the cap, never without bound
        return name

    def observe_bad_request(self) -> None:
        self._child(self.requests, "bad_request").inc()

    def observe_error(self) -> None:
        self._child(self.requests, "error").inc()
