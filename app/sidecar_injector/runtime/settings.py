"""The one settings object.

Built once (from ``SIDECAR_INJECTOR_*`` environment variables, overridden by ``serve``
flags) and passed down; nothing else in the package reads the environment.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sidecar_injector.core.inputs import SYSTEM_NAMESPACES, InjectionPolicy, NativeSidecarMode


def _split_list(value: object) -> object:
    """Accept ``a,b , c`` from an environment variable as well as a real list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


#: every setting's environment variable is this prefix and the field name in capitals
ENV_PREFIX = "SIDECAR_INJECTOR_"
#: the API server's default request limit (--max-resource-write-bytes): no review it sends is larger
MAX_REQUEST_BYTES = 3 * 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the injector. Each field has an env var ``SIDECAR_INJECTOR_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
    )

    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(8443, ge=1, le=65535, description="HTTPS port")
    cert_file: Path | None = Field(None, description="serving certificate (PEM)")
    key_file: Path | None = Field(None, description="its private key (PEM)")
    profiles_dir: Path | None = Field(
        None, description="extra/override profiles (*.yaml); built-ins stay available unless disabled"
    )
    builtin_profiles: bool = Field(True, description="load the built-in profiles")
    strict: bool = Field(False, description="deny instead of warn on unknown profiles and conflicts")
    native_sidecars: NativeSidecarMode = Field(
        "auto", description="auto (run-to-completion pods and on request) / always / never"
    )
    default_profiles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="the cluster's default profiles: for `sidecar.io/inject: true`, for namespaces enabled without a "
        "sidecar.io/profiles annotation and for cluster-wide mode",
    )
    namespace: str | None = Field(None, description="the injector's own namespace (never injected into)")
    excluded_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="more namespaces never injected into (system ones always are)"
    )
    cluster_wide: bool = Field(
        False, description="inject the default profiles into every pod of every namespace not excluded or disabled"
    )
    namespace_lookup: bool = Field(
        False,
        description="read namespace labels/annotations from the Kubernetes API (a watched cache): "
        "namespace opt-in, sidecar.io/profiles and label-based profile policy need it (RBAC: get/list/watch namespaces)",
    )
    namespace_resync_seconds: float = Field(300.0, ge=5, le=86400, description="namespace cache: full relist interval")
    namespace_lookup_timeout_seconds: float = Field(
        1.0, gt=0, le=10, description="namespace cache miss: timeout of the one GET made instead"
    )
    events: bool = Field(
        False,
        description="emit Injected/InjectionSkipped Kubernetes Events on the pod's owner (or the pod), off the request path",
    )
    profile_resources: bool = Field(
        False,
        description="watch ClusterSidecarProfile and SidecarProfile resources (the sidecar.io CRDs) and inject them; "
        "a namespace's SidecarProfile applies to its own pods",
    )
    namespaced_profiles: bool = Field(
        True, description="with profile resources: tenants' SidecarProfiles too (off: ClusterSidecarProfiles only)"
    )
    profile_resources_sync_timeout_seconds: float = Field(
        30.0, ge=0, le=600, description="readiness waits at most this long for the first list of the profile resources"
    )
    profile_status: bool = Field(
        True, description="write the profile resources' status (Accepted condition), one replica at a time via a Lease"
    )
    profile_status_lease: str = Field(
        "sidecar-injector-profile-status",
        min_length=1,
        max_length=253,
        description="name of that Lease, in the injector's own namespace (--namespace)",
    )
    reload: bool = Field(True, description="reload the certificate and profiles when their files change")
    log_format: Literal["json", "text"] = Field(
        "text", description="log line format: one JSON object per line, or text for people"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    metrics_port: int = Field(9090, ge=0, le=65535, description="plain-HTTP Prometheus port (0: off)")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="the event loop: uvloop (faster) or the standard library's asyncio"
    )
    memory_trim_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="every this many seconds, hand the memory the C allocator holds free back to the system "
        "(glibc malloc_trim; 0: never)",
    )
    metrics_host: str | None = Field(None, description="listen address of the metrics port (default: --host)")
    drain_seconds: float = Field(5.0, ge=0, le=300, description="on SIGTERM: seconds to keep serving with readiness false")
    shutdown_timeout_seconds: float = Field(
        10.0, ge=0, le=300, description="then: longest wait for in-flight reviews to finish"
    )
    max_body_bytes: int = Field(
        MAX_REQUEST_BYTES,
        ge=1024,
        le=64 * 1024 * 1024,
        description="largest AdmissionReview body accepted (bytes; 413 above). The default is the API server's "
        "own request limit (--max-resource-write-bytes): it never sends more",
    )
    large_body_bytes: int = Field(
        512 * 1024,
        ge=1024,
        description="reviews larger than this (and pods of more than 64 containers) are decoded and decided in "
        "a worker thread, so that health checks and small reviews never wait behind them (bytes)",
    )
    large_body_workers: int = Field(
        1,
        ge=1,
        le=16,
        description="large reviews read and decided at once (each holds its body and decoded pod in memory); "
        "the others wait, unread",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1024 * 1024, description="largest request line + headers accepted (bytes; 431 above)"
    )
    header_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="seconds for the TLS handshake, and for each request's line and headers (from the "
        "connection's start or the request's first byte); slower connections are closed",
    )
    request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="seconds from a request's headers to the end of its answer: reading the body, deciding and "
        "writing the answer; slower connections are dropped",
    )
    keep_alive_timeout_seconds: int = Field(
        5, ge=1, le=300, description="idle keep-alive connections are closed after this many seconds"
    )
    max_connections: int = Field(
        500,
        ge=1,
        le=100_000,
        description="connections open at once: a new one closes the one that has waited longest for a request, "
        "or is closed itself when every connection is busy",
    )

    @field_validator("default_profiles", "excluded_namespaces", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @cached_property
    def policy(self) -> InjectionPolicy:
        """The rules the injection core applies, as plain data (the core never sees settings)."""
        own = {self.namespace} if self.namespace else set()
        return InjectionPolicy(
            strict=self.strict,
            native_sidecars=self.native_sidecars,
            default_profiles=tuple(self.default_profiles),
            never_inject_namespaces=SYSTEM_NAMESPACES | own | frozenset(self.excluded_namespaces),
            cluster_wide=self.cluster_wide,
        )
