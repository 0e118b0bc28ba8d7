"""The chart's optional observability objects (issue 20, item 7): a PrometheusRule, a Grafana
dashboard ConfigMap and a HorizontalPodAutoscaler.

The rules pass ``promtool check rules`` (Debian's ``prometheus`` package, installed by ``make
sidecar-binaries``); every metric the rules and the dashboard read is one the real server exports
on ``/metrics``; the dashboard is JSON Grafana can load. Rendering uses test_chart's helpers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from serverproc import ca_context, free_port, start_server, stop
from sidecar_injector.webhook.tls import write_cert_bundle
from test_chart import (
    FULLNAME,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    _fetch_helm,
    chart_yaml,
    of_kind,
    one,
    render,
    render_error,
)

ALL_ON = {
    "metrics": {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    "autoscaling": {"enabled": True},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    # test_chart's session fixture renders all its combinations up front; these tests need only theirs
    return _fetch_helm("4")


@pytest.fixture(scope="module")
def rendered(helm: Path) -> list[dict[str, Any]]:
    return render(helm, ALL_ON)


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in one(docs, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def dashboard_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    configmap = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    [(key, text)] = configmap["data"].items()
    assert key.endswith(".json")
    loaded = json.loads(text)
    assert isinstance(loaded, dict)
    return loaded


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return exprs


# -- what is rendered -------------------------------------------------------------------------------------


def test_nothing_of_it_by_default(helm: Path) -> None:
    docs = render(helm, {})
    assert not of_kind(docs, "PrometheusRule") and not of_kind(docs, "HorizontalPodAutoscaler")
    assert not [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def test_the_objects_are_labelled_namespaced_and_valid(rendered: list[dict[str, Any]]) -> None:
    for kind in ("PrometheusRule", "HorizontalPodAutoscaler"):
        meta = one(rendered, kind)["metadata"]
        assert meta["namespace"] == NAMESPACE and meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/version"] == chart_yaml()["appVersion"]
    configmap = one(rendered, "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    for doc in (one(rendered, "HorizontalPodAutoscaler"), configmap):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_autoscaler_scales_the_webhook_deployment_on_cpu(rendered: list[dict[str, Any]]) -> None:
    hpa = one(rendered, "HorizontalPodAutoscaler")
    deployment = one(rendered, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert deployment["metadata"]["name"] == FULLNAME
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 70
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"], "utilization is a share of the CPU request"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}, "must not be above"),
        ({"metrics": {"enabled": False, "prometheusRule": {"enabled": True}}}, "needs metrics.enabled"),
        ({"metrics": {"enabled": False, "grafanaDashboard": {"enabled": True}}}, "needs metrics.enabled"),
        ({"metrics": {"prometheusRule": {"enabeld": True}}}, "enabeld"),
        ({"metrics": {"prometheusRule": {"errorRatio": 5}}}, "errorRatio"),
        ({"autoscaling": {"minReplicas": 0}}, "minReplicas"),
    ],
    ids=["min-above-max", "rule-without-metrics", "dashboard-without-metrics", "typo", "ratio", "zero"],
)
def test_impossible_or_misspelt_values_are_refused(helm: Path, values: dict[str, Any], message: str) -> None:
    assert message in render_error(helm, values)


def test_the_rules_select_this_releases_series(rendered: list[dict[str, Any]], helm: Path) -> None:
    for rule in rules_of(rendered):
        assert f'job="{FULLNAME}", namespace="{NAMESPACE}"' in rule["expr"], rule["alert"]
    custom = rules_of(render(helm, {"metrics": {"prometheusRule": {"enabled": True, "selector": 'service="x"'}}}))
    assert all('service="x"' in rule["expr"] and "job=" not in rule["expr"] for rule in custom)


def test_every_failure_mode_has_an_alert(rendered: list[dict[str, Any]]) -> None:
    by_alert = {rule["alert"]: rule["expr"] for rule in rules_of(rendered)}
    assert "absent(sidecar_injector_" in by_alert["SidecarInjectorWebhookUnavailable"]
    assert 'outcome=~"error|bad_request"' in by_alert["SidecarInjectorWebhookErrors"]
    assert "sidecar_injector_certificate_expiry_timestamp_seconds" in by_alert["SidecarInjectorCertificateExpiresSoon"]
    assert 'result="refused"' in by_alert["SidecarInjectorProfilesRefused"]
    assert 'reason="invalid-values"' in by_alert["SidecarInjectorPodsSkippedForBadValues"]
    assert "sidecar_injector_background_job_failures_total" in by_alert["SidecarInjectorBackgroundJobFailing"]


# -- promtool ---------------------------------------------------------------------------------------------------


def test_promtool_checks_the_rules(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: `make sidecar-binaries` installs Debian's prometheus package, which has it")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(one(rendered, "PrometheusRule")["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules_of(rendered))} rules found" in result.stdout


# -- the metrics they read exist -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name the real server's /metrics has: samples, and the families of HELP/TYPE lines
    (a labelled counter with no child yet has no sample) with their sample suffixes."""
    directory = tmp_path_factory.mktemp("server")
    certs = write_cert_bundle(directory / "tls", "sidecar-injector", "sidecar-injector", extra_ips=["127.0.0.1"])
    port, metrics_port = free_port(), free_port()
    proc = start_server(
        ["--cert-file", str(certs.cert), "--key-file", str(certs.key), "--metrics-port", str(metrics_port)],
        directory / "stderr",
        ca=ca_context(certs.ca_cert),
        port=port,
    )
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    finally:
        stop(proc)
    names: set[str] = set()
    for line in text.splitlines():
        typed = re.match(r"# TYPE (\w+) (\w+)", line)
        if typed:
            family, kind = typed.groups()
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ())
            names |= {family, *(family.removesuffix("_total") + s for s in suffixes)}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names(expression: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    return {w for w in re.findall(r"[a-zA-Z_:][\w:]*", without_ranges) if w.startswith("sidecar_injector_")}


def test_the_rules_and_the_dashboard_read_only_exported_metrics(rendered: list[dict[str, Any]], exported: set[str]) -> None:
    assert "sidecar_injector_admission_requests_total" in exported, "the parse found the server's metrics"
    expressions = [rule["expr"] for rule in rules_of(rendered)] + dashboard_expressions(dashboard_of(rendered))
    used = set().union(*(metric_names(e) for e in expressions))
    assert len(used) >= 10, used
    assert not used - exported, f"not exported by the server: {sorted(used - exported)}"


def test_metric_names_finds_what_an_expression_reads() -> None:
    assert metric_names('sum(rate(sidecar_injector_x_total{job="sidecar_injector_y"}[5m])) / sidecar_injector_z') == {
        "sidecar_injector_x_total",
        "sidecar_injector_z",
    }


# -- the dashboard ------------------------------------------------------------------------------------------------


def test_the_dashboard_is_json_grafana_loads(rendered: list[dict[str, Any]]) -> None:
    dashboard = dashboard_of(rendered)
    assert dashboard["uid"] == "sidecar-injector" and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat") and panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= variables
    for expr in dashboard_expressions(dashboard):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
