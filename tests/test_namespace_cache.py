"""The namespace cache (and the API client it runs on) against a real HTTP fake of the API.

Every test talks to ``kube_fake_api.FakeKubeApi`` through the official client over a
socket: lists, chunked watch streams, 410 Gone, dropped connections, a server that goes
away and comes back. Waits poll with generous deadlines; no test asserts how long
something took beyond "it did not hang".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes.config.incluster_config as incluster
import kubernetes.config.kube_config as kube_config
import pytest
import yaml
from kubernetes import client

from kube_fake_api import FakeKubeApi
from sidecar_injector.cluster.kube import KubeConfigError, api_client, load_configuration, new_api_client
from sidecar_injector.cluster.namespaces import NamespaceCache, NamespaceUnavailable, namespace_facts
from sidecar_injector.core.inputs import NamespaceFacts
from sidecar_injector.runtime.metrics import Metrics
from waiting import wait_until


@pytest.fixture
def make_cache(fake: FakeKubeApi) -> Iterator[Callable[..., NamespaceCache]]:
    caches: list[NamespaceCache] = []

    def make(**options: object) -> NamespaceCache:
        settings: dict[str, object] = {
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.2,
            "watch_timeout_seconds": 30,
            "lookup_timeout_seconds": 0.5,
            "request_timeout_seconds": 5,
            "page_size": 2,
        }
        settings.update(options)
        cache = NamespaceCache(new_api_client(fake.configuration()), **settings)  # type: ignore[arg-type]
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.stop()


def started(cache: NamespaceCache, fake: FakeKubeApi) -> NamespaceCache:
    """Start the cache and wait until it listed and has a watch open."""
    cache.start()
    wait_until(lambda: cache.synced, what="the first list")
    wait_until(lambda: fake.open_watches() >= 1, what="the watch")
    return cache


def label(cache: NamespaceCache, name: str, key: str) -> str | None:
    facts = cache.cached(name)
    return facts.labels.get(key) if facts else None


# -- the list and the watch ------------------------------------------------------------------


def test_the_first_list_fills_the_cache_page_by_page_and_marks_it_synced(fake, make_cache):
    fake.add_namespace("shop", {"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": "logging,metrics"})
    for name in ("a", "b", "c", "d"):
        fake.add_namespace(name)
    cache = make_cache(page_size=2)
    assert not cache.synced and cache.cached("shop") is None

    started(cache, fake)

    assert cache.cached("shop") == NamespaceFacts(
        "shop",
        {"kubernetes.io/metadata.name": "shop", "sidecar.io/inject": "enabled"},
        {"sidecar.io/profiles": "logging,metrics"},
    )
    assert all(cache.cached(name) for name in ("a", "b", "c", "d"))
    pages = fake.lists()
    assert [p.query.get("limit") for p in pages] == ["2", "2", "2"]
    assert "continue" not in pages[0].query and all("continue" in p.query for p in pages[1:])
    watch = fake.watches()[0].query
    assert watch["resourceVersion"] == cache.resource_version == str(fake.rv)
    assert watch["allowWatchBookmarks"] == "true" and int(watch["timeoutSeconds"]) >= 1


def test_watch_events_add_modify_and_delete_namespaces(fake, make_cache):
    fake.add_namespace("old")
    cache = started(make_cache(), fake)

    fake.add_namespace("new", {"team": "a"})
    wait_until(lambda: label(cache, "new", "team") == "a", what="ADDED")
    fake.modify_namespace("new", {"team": "b"}, {"sidecar.io/profiles": "proxy"})
    wait_until(lambda: label(cache, "new", "team") == "b", what="MODIFIED")
    assert cache.cached("new").annotations == {"sidecar.io/profiles": "proxy"}
    fake.delete_namespace("old")
    wait_until(lambda: cache.cached("old") is None, what="DELETED")

    assert len(fake.lists()) == 1, "events are applied without relisting"
    assert cache.resource_version == str(fake.rv)


def test_a_stream_that_ends_is_rewatched_from_the_last_resource_version(fake, make_cache):
    cache = started(make_cache(), fake)
    fake.add_namespace("seen")
    wait_until(lambda: cache.cached("seen"), what="the event")
    last = fake.namespaces["seen"]["metadata"]["resourceVersion"]

    fake.close_watches()

    wait_until(lambda: len(fake.watches()) == 2, what="the second watch")
    assert fake.watches()[1].query["resourceVersion"] == last
    assert len(fake.lists()) == 1


def test_a_bookmark_moves_the_resource_version_the_next_watch_starts_from(fake, make_cache):
    cache = started(make_cache(), fake)
    fake.other_changes(7)  # other kinds changed: no namespace event carries the new version
    version = fake.bookmark()

    wait_until(lambda: cache.resource_version == str(version), what="the bookmark")
    fake.close_watches()
    wait_until(lambda: len(fake.watches()) == 2, what="the second watch")
    assert fake.watches()[1].query["resourceVersion"] == str(version)


def test_a_410_gone_error_event_relists_and_the_relisted_facts_are_visible(fake, make_cache):
    metrics = Metrics()
    cache = started(make_cache(metrics=metrics), fake)
    fake.add_namespace("missed", {"team": "x"}, silent=True)  # a change the watch never delivers

    fake.force_gone()

    wait_until(lambda: cache.cached("missed"), what="the relist")
    assert metrics.registry.get_sample_value("sidecar_injector_namespace_cache_relists_total", {"reason": "expired"}) == 1
    wait_until(lambda: len(fake.watches()) == 2, what="the watch after the relist")
    assert fake.watches()[1].query["resourceVersion"] == str(fake.rv), "the watch resumes from the new list"


def test_a_watch_resumed_from_a_compacted_resource_version_relists(fake, make_cache):
    fake.add_namespace("gone-soon")
    cache = started(make_cache(), fake)
    fake.compact()  # the history the cache would resume from is gone
    fake.delete_namespace("gone-soon", silent=True)
    fake.add_namespace("later", silent=True)

    fake.close_watches()

    wait_until(lambda: cache.cached("later") and cache.cached("gone-soon") is None, what="the relist")
    assert len(fake.lists()) == 2


def test_a_dropped_connection_reconnects_from_the_last_resource_version(fake, make_cache):
    cache = started(make_cache(), fake)
    fake.add_namespace("before")
    wait_until(lambda: cache.cached("before"), what="the event")

    fake.drop_connections()
    fake.add_namespace("after")

    wait_until(lambda: cache.cached("after"), what="the event after reconnecting")
    assert len(fake.lists()) == 1, "a reconnect resumes the watch, it does not relist"


def test_the_cache_reconnects_when_the_api_server_comes_back(fake, make_cache, caplog):
    cache = started(make_cache(), fake)
    fake.go_down()
    fake.add_namespace("while-down")
    wait_until(lambda: "namespace watch failed; retrying" in caplog.text, what="a failed reconnect")

    fake.come_up()

    wait_until(lambda: cache.cached("while-down"), what="the watch after the outage")
    assert len(fake.lists()) == 1
    assert cache.synced


def test_a_cache_started_while_the_api_is_down_syncs_once_it_is_up(fake, make_cache, caplog):
    fake.add_namespace("shop")
    fake.go_down()
    cache = make_cache()
    cache.start()
    wait_until(lambda: "namespace list failed; retrying" in caplog.text, what="a failed list")
    assert not cache.synced

    fake.come_up()

    wait_until(lambda: cache.synced, what="the first list")
    assert cache.cached("shop")


def test_a_hung_watch_is_given_up_after_its_read_timeout(fake, make_cache):
    fake.hang_watches = True  # headers, then silence: a half-open connection looks the same
    cache = started(make_cache(watch_timeout_seconds=1), fake)
    fake.add_namespace("unseen")  # the hung stream never delivers it
    fake.hang_watches = False

    wait_until(lambda: cache.cached("unseen"), what="a new watch after the read timeout")
    assert len(fake.lists()) == 1


def test_a_periodic_resync_relists_everything(fake, make_cache):
    metrics = Metrics()
    cache = started(make_cache(resync_seconds=0.5, metrics=metrics), fake)
    fake.add_namespace("quiet", silent=True)

    wait_until(lambda: cache.cached("quiet"), what="the resync")
    assert metrics.registry.get_sample_value("sidecar_injector_namespace_cache_relists_total", {"reason": "resync"}) >= 1


def test_stop_is_prompt_even_while_the_watch_hangs(fake, make_cache):
    fake.hang_watches = True
    cache = started(make_cache(), fake)

    cache.stop(timeout=5)

    assert not cache.running


# -- lookups ----------------------------------------------------------------------------------


def test_a_miss_makes_one_get_and_then_answers_from_memory(fake, make_cache):
    fake.add_namespace("shop", {"sidecar.io/inject": "enabled"})
    cache = make_cache()  # not started: lookups work without the watch too
    assert cache.cached("shop") is None
    assert fake.gets("shop") == []

    facts = cache.lookup("shop")

    assert facts is not None and facts.labels["sidecar.io/inject"] == "enabled"
    assert cache.lookup("shop") == facts and cache.cached("shop") == facts
    assert len(fake.gets("shop")) == 1


def test_a_missing_namespace_is_none_and_its_absence_is_remembered_briefly(fake, make_cache):
    cache = make_cache(remember_seconds=0.2)

    assert cache.lookup("ghost") is None
    assert cache.lookup("ghost") is None
    assert len(fake.gets("ghost")) == 1

    fake.add_namespace("ghost")
    wait_until(lambda: cache.lookup("ghost") is not None, what="the remembered absence to expire")
    assert len(fake.gets("ghost")) >= 2


def test_the_watch_overrides_a_remembered_absence(fake, make_cache):
    cache = started(make_cache(remember_seconds=600), fake)
    assert cache.lookup("soon") is None

    fake.add_namespace("soon")

    wait_until(lambda: cache.cached("soon"), what="the ADDED event")


def test_a_slow_api_server_raises_unavailable_instead_of_hanging(fake, make_cache):
    fake.add_namespace("shop")
    fake.namespace_get_delay = 30
    cache = make_cache(lookup_timeout_seconds=0.3)

    started_at = time.monotonic()
    with pytest.raises(NamespaceUnavailable):
        cache.lookup("shop")
    assert time.monotonic() - started_at < 30, "the lookup waited for the server instead of timing out"
    assert len(fake.gets("shop")) == 1, "a timed-out lookup is not retried"

    fake.namespace_get_delay = 0
    assert cache.lookup("shop") is not None, "a failure is not remembered"


@pytest.mark.parametrize("code", [500, 503, 403])
def test_api_errors_raise_unavailable(fake, make_cache, code):
    fake.add_namespace("shop")
    fake.namespace_get_status = code
    with pytest.raises(NamespaceUnavailable, match=str(code)):
        make_cache().lookup("shop")


def test_an_unreachable_api_server_raises_unavailable(fake, make_cache):
    cache = make_cache()
    fake.go_down()
    with pytest.raises(NamespaceUnavailable):
        cache.lookup("shop")


def test_lookups_and_sync_are_counted(fake, make_cache):
    metrics = Metrics()
    fake.add_namespace("shop")
    cache = started(make_cache(metrics=metrics), fake)
    cache.lookup("shop")
    cache.lookup("ghost")
    fake.namespace_get_status = 500
    with pytest.raises(NamespaceUnavailable):
        cache.lookup("other")

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("sidecar_injector_namespace_cache_synced") == 1
    assert sample("sidecar_injector_namespace_cache_relists_total", reason="initial") == 1
    for result in ("hit", "not_found", "unavailable"):
        assert sample("sidecar_injector_namespace_cache_lookups_total", result=result) == 1
    assert sample("sidecar_injector_namespace_cache_lookups_total", result="found") == 0
    cache.stop()
    assert sample("sidecar_injector_namespace_cache_synced") == 0


def test_namespace_facts_keep_only_string_labels_and_annotations():
    obj = {"metadata": {"name": "shop", "labels": {"a": "1", "b": 2}, "annotations": "nope"}}
    assert namespace_facts(obj) == NamespaceFacts("shop", {"a": "1"}, {})
    assert namespace_facts({"metadata": {}}) is None
    assert namespace_facts(None) is None


# -- the API client ------------------------------------------------------------------------------


def test_a_kubeconfig_and_context_reach_the_api(fake, tmp_path: Path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "other",
                "clusters": [
                    {"name": "fake", "cluster": {"server": fake.url}},
                    {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
                ],
                "users": [{"name": "me", "user": {"token": "secret-token"}}],
                "contexts": [
                    {"name": "test", "context": {"cluster": "fake", "user": "me"}},
                    {"name": "other", "context": {"cluster": "elsewhere", "user": "me"}},
                ],
            }
        )
    )
    fake.add_namespace("shop")

    api = api_client(kubeconfig, context="test")

    names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert names == ["shop"]
    assert api.configuration.retries is False
    assert api.user_agent.startswith("sidecar-injector/")


def test_in_cluster_credentials_come_first(monkeypatch, tmp_path: Path):
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    configuration = load_configuration()

    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.api_key["BearerToken"] == "bearer pod-token"
    assert configuration.ssl_ca_cert == str(tmp_path / "ca.crt")


def test_without_a_pod_or_a_kubeconfig_the_error_says_so(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing"))

    with pytest.raises(KubeConfigError, match=r"not running in a pod.*kubeconfig"):
        load_configuration()
    with pytest.raises(KubeConfigError):
        load_configuration(tmp_path / "missing")
