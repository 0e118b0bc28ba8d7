"""What a real API server does to a webhook: restarts, watch expiry, certificates rotated under load."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from cluster_support import Injector, Webhook, container_names, pod_manifest, unique
from controlplane import ControlPlane, wait_for


def injected_without_asking(plane: ControlPlane, namespace: str) -> bool:
    """Create a pod that does not ask for sidecars: injected only if the webhook's namespace
    cache knows the namespace is labelled sidecar.io/inject=enabled."""
    result = plane.create(pod_manifest(unique("probe")), "-n", namespace, check=False)
    if result.returncode != 0:
        return False
    return any(name != "app" for name in container_names(json.loads(result.stdout)))


def test_injection_continues_across_an_api_server_restart_and_sees_a_label_changed_during_the_outage(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    assert not injected_without_asking(control_plane, namespace)
    # while the webhook's API server is down, the label is changed through another API server
    # on the same etcd: the webhook's watch must find the change when it reconnects
    control_plane.restart_apiserver(
        during=lambda: control_plane.with_other_apiserver(
            lambda config: control_plane.kubectl(
                "label", "namespace", namespace, "sidecar.io/inject=enabled", kubeconfig=config
            )
        )
    )
    wait_for("the label seen by the webhook", lambda: injected_without_asking(control_plane, namespace), 60, interval=1)
    asked = control_plane.create(pod_manifest("asks", {"sidecar.io/inject": "metrics"}), "-n", namespace)
    assert any("metrics" in name for name in container_names(json.loads(asked.stdout)))
    assert webhook.process.alive() and webhook.is_ready()


def test_a_watch_resumed_after_compaction_gets_410_relists_and_loses_nothing(
    control_plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    expired_before = webhook.metric("sidecar_injector_namespace_cache_relists_total", reason="expired")
    webhook.process.pause()  # its namespace watch stays at the resourceVersion it had
    try:
        control_plane.kubectl("label", "namespace", namespace, "sidecar.io/inject=enabled")
        for i in range(5):  # history for compaction to remove
            control_plane.kubectl("annotate", "namespace", namespace, f"test.sidecar.io/n={i}", "--overwrite")
        control_plane.compact_etcd()
        # the restart ends every watch and starts the watch cache at the current revision: a watch
        # resumed from the webhook's older resourceVersion can only get 410 Gone
        control_plane.restart_apiserver()
    finally:
        webhook.process.resume()
    wait_for(
        "a relist after 410 Gone",
        lambda: webhook.metric("sidecar_injector_namespace_cache_relists_total", reason="expired") > expired_before,
        60,
        interval=0.5,
        why=webhook.process.tail,
    )
    wait_for("the label seen after the relist", lambda: injected_without_asking(control_plane, namespace), 30, interval=1)


def _webhook_configs(plane: ControlPlane) -> list[dict[str, Any]]:
    found = []
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        found += plane.get(kind, "-l", "app.kubernetes.io/instance=sidecar-injector")["items"]
    return found


def _set_ca_bundle(plane: ControlPlane, bundle: str) -> None:
    """What cert-manager's cainjector or a rotation job does: patch every webhook's caBundle."""
    for config in _webhook_configs(plane):
        kind = config["kind"].lower()
        patch = [
            {"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            for i in range(len(config["webhooks"]))
        ]
        plane.kubectl("patch", kind, config["metadata"]["name"], "--type=json", "-p", json.dumps(patch))


def test_serving_certificate_and_ca_bundle_rotated_while_pods_are_created_fail_no_admission(
    control_plane: ControlPlane, injector: Injector, webhook: Webhook, namespace: str
) -> None:
    failures: list[str] = []
    created: list[dict[str, Any]] = []
    stop = threading.Event()

    def create_pods() -> None:
        while not stop.is_set():
            pod = pod_manifest(unique("load"), {"sidecar.io/inject": "logging"})
            result = control_plane.create(pod, "-n", namespace, check=False)
            if result.returncode != 0:
                failures.append(result.stderr)
            else:
                created.append(json.loads(result.stdout))

    loader = threading.Thread(target=create_pods, daemon=True)
    loader.start()
    try:
        time.sleep(2)
        old = injector.certs
        new = injector.generate_certs(injector.workdir / "certs-rotated")
        # 1. trust both CAs, 2. serve the new certificate (the files are replaced in place, as
        # kubelet does for a mounted Secret), 3. trust only the new CA
        _set_ca_bundle(control_plane, injector.ca_bundle(old, new))
        time.sleep(2)
        reloads_before = webhook.metric("sidecar_injector_reloads_total", what="certificate", result="ok")
        for name in ("tls.key", "tls.crt"):
            staged = old / f".{name}.new"
            staged.write_bytes((new / name).read_bytes())
            staged.replace(old / name)
        wait_for(
            "the webhook reloaded its certificate",
            lambda: webhook.metric("sidecar_injector_reloads_total", what="certificate", result="ok") > reloads_before,
            30,
            why=webhook.process.tail,
        )
        time.sleep(2)
        _set_ca_bundle(control_plane, injector.ca_bundle(new))
        time.sleep(3)
    finally:
        stop.set()
        loader.join(60)
    assert not failures, failures[:3]
    assert len(created) >= 10, f"only {len(created)} pods created during the rotation"
    assert all(any(n != "app" for n in container_names(p)) for p in created)
    # the rotated certificate is what the API server now trusts and the webhook serves
    served = base64.b64decode(_webhook_configs(control_plane)[0]["webhooks"][0]["clientConfig"]["caBundle"])
    assert served == (injector.workdir / "certs-rotated" / "ca.crt").read_bytes()
    # the folder the webhook reads is the rotated material now, its CA included (later tests trust it)
    (injector.certs / "ca.crt").write_bytes((injector.workdir / "certs-rotated" / "ca.crt").read_bytes())
