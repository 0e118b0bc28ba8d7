"""A Kubernetes API client: in-cluster credentials in a pod, else a kubeconfig.

The explicit choice wins: a kubeconfig path or context given by the caller is used as
such. Otherwise the pod's service account (token and CA mounted by the kubelet; the token
is re-read as it rotates) is tried first, then the default kubeconfig (``$KUBECONFIG`` or
``~/.kube/config``), as kubectl and client-go do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import urllib3
from kubernetes import client, config

from sidecar_injector import __version__


def raw_response(response: object) -> urllib3.BaseHTTPResponse:
    """The HTTP response of an API call made with ``_preload_content=False``.

    The client's methods are annotated with the model they decode; with
    ``_preload_content=False`` they return urllib3's response instead (read with orjson,
    or streamed for a watch), which this states and checks.
    """
    if not isinstance(response, urllib3.BaseHTTPResponse):
        raise TypeError(f"expected the raw HTTP response of a _preload_content=False call, got {type(response).__name__}")
    return response


def list_pages(
    list_call: Callable[..., object], *, page_size: int = 500, request_timeout_seconds: float = 30.0
) -> Iterator[dict[str, Any]]:
    """Every page of a List, decoded: ``list_call`` is a client list method (bound to its
    positional arguments, e.g. with functools.partial) called with limit and continue tokens.

    Raises the client's ApiException (or a urllib3 error) if the API refuses or fails; an
    expired ``continue`` token (a list slower than the API server's limit, minutes) is one.
    """
    token: str | None = None
    while True:
        response = raw_response(
            list_call(limit=page_size, _continue=token, _preload_content=False, _request_timeout=request_timeout_seconds)
        )
        try:
            page = orjson.loads(response.data)
        finally:
            response.release_conn()
        yield page
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return


class KubeConfigError(Exception):
    """No usable Kubernetes API configuration (neither in-cluster nor a kubeconfig)."""


def in_cluster_configuration() -> client.Configuration:
    """The pod's service account; raises KubeConfigError outside a pod."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise KubeConfigError(f"not running in a pod: {exc}") from exc
    return configuration


def kubeconfig_configuration(path: str | Path | None = None, context: str | None = None) -> client.Configuration:
    """A kubeconfig file (default: ``$KUBECONFIG`` or ``~/.kube/config``) and context."""
    configuration = client.Configuration()
    try:
        # persist_config=False: never write refreshed credentials back (read-only filesystems)
        config.load_kube_config(
            config_file=str(path) if path else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as exc:  # the loader raises ConfigException, OSError, YAML and key errors
        where = path or config.KUBE_CONFIG_DEFAULT_LOCATION
        raise KubeConfigError(f"no usable kubeconfig ({where}): {exc}") from exc
    return configuration


def load_configuration(kubeconfig: str | Path | None = None, context: str | None = None) -> client.Configuration:
    """The explicit kubeconfig/context if given, else in-cluster, else the default kubeconfig."""
    if kubeconfig or context:
        return kubeconfig_configuration(kubeconfig, context)
    try:
        return in_cluster_configuration()
    except KubeConfigError as in_cluster:
        try:
            return kubeconfig_configuration()
        except KubeConfigError as kubeconfig_error:
            raise KubeConfigError(f"no Kubernetes API configuration: {in_cluster}; {kubeconfig_error}") from None


def new_api_client(configuration: client.Configuration) -> client.ApiClient:
    """An ApiClient on ``configuration``, set up for the injector's callers.

    Requests are not retried by urllib3 (its default retries a timed-out GET three times,
    which would turn a one-second namespace lookup into four); the namespace cache and the
    event recorder retry on their own terms. TCP keepalive notices a watch whose connection
    an idle proxy or load balancer dropped silently.
    """
    configuration.retries = False
    configuration.keep_alive = True
    api = client.ApiClient(configuration)
    api.user_agent = f"sidecar-injector/{__version__}"
    return api


def api_client(kubeconfig: str | Path | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient for the cluster the injector runs in (or the kubeconfig's)."""
    return new_api_client(load_configuration(kubeconfig, context))
