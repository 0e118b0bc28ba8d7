"""Issue 20: a skipped sidecar is visible where people look, and typos get a did-you-mean.

* ``sidecar.io/status`` records, next to ``profiles`` (what was injected, unchanged), a
  ``skipped`` map: each requested profile that was not injected, and why — also on a pod
  that got nothing (``"profiles": {}``), whose answer then only writes that annotation; a
  reinvocation adds nothing new, and a skipped profile is still retried by a later call
  (docs/injection.md: "not recorded ... so a later call can retry it"); a pod that got
  nothing is neither stale nor missed for ``profiles stale``;
* ``explain`` shows it; ``inject`` writes it into the template;
* warnings: an unknown profile gets "did you mean", a misspelt ``<profile>.sidecar.io/``
  prefix and a value on the pod for a profile it did not request are warned about (by the
  webhook too; the same key on the namespace is a default, not warned about), and every
  value warning names the annotation key (the missing-repo one whole, not cut mid-parenthesis).
"""

from __future__ import annotations

import base64
import copy
import io
import json
from typing import Any

import jsonpatch
import pytest
import yaml

from sidecar_injector.cli import main
from sidecar_injector.core.decide import decide
from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import InjectionPolicy, NamespaceFacts, RequestContext
from sidecar_injector.core.staleness import missed_pods, stale_pods
from sidecar_injector.profiles.loading import builtin_profiles
from skip_record import assert_skip_recorded, assert_skipped_answer

PROFILES = builtin_profiles()
STATUS = "sidecar.io/status"
REPO = "https://github.com/acme/site"


def pod(inject: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"sidecar.io/inject": inject, **annotations}},
        "spec": {"containers": [{"name": "web", "image": "ghcr.io/example/web:1.4.2"}]},
    }


def run(the_pod: dict[str, Any], policy: InjectionPolicy | None = None, namespace: NamespaceFacts | None = None) -> Decision:
    before = copy.deepcopy(the_pod)
    context = RequestContext(namespace="shop", namespace_facts=namespace)
    decision = decide(the_pod, context, PROFILES, policy or InjectionPolicy())
    assert the_pod == before
    return decision


def applied(the_pod: dict[str, Any], decision: Decision) -> dict[str, Any]:
    result = jsonpatch.apply_patch(the_pod, copy.deepcopy(decision.patch), in_place=False)
    assert isinstance(result, dict)
    return result


def status_of(the_pod: dict[str, Any]) -> dict[str, Any]:
    loaded = json.loads(the_pod["metadata"]["annotations"][STATUS])
    assert isinstance(loaded, dict)
    return loaded


def cli(*argv: str, stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


MISSING_REPO = (
    "git-sync.sidecar.io/repo is required (the Git repository to sync (https://, ssh:// or scp-like user@host:path))"
)


# -- sidecar.io/status records what was skipped ----------------------------------------------------------


def test_a_partly_injected_pod_records_the_skipped_profile_and_why():
    decision = run(pod("logging,git-sync"))

    assert decision.outcome == "injected" and decision.injected == ("logging",)
    status = status_of(applied(pod("logging,git-sync"), decision))
    assert set(status) == {"profiles", "skipped"}
    assert set(status["profiles"]) == {"logging"}, "the injected profiles keep their key"
    assert status["skipped"] == {"git-sync": MISSING_REPO}


BAD_PERIOD = {"git-sync.sidecar.io/repo": REPO, "git-sync.sidecar.io/period": "2s"}
PERIOD_EXPECTED = "git-sync.sidecar.io/period=2s (on the pod): expected a duration of at least 5s"


def test_a_pod_whose_only_profile_is_skipped_for_a_bad_value_records_why_in_its_status_alone():
    the_pod = pod("git-sync", **BAD_PERIOD)
    decision = run(the_pod)

    # still a skip, for the metrics, the log and the Events; the patch only records why
    assert decision.outcome == "skipped" and decision.reason == "invalid-values" and decision.injected == ()
    assert decision.skipped == {"git-sync": PERIOD_EXPECTED}
    assert decision.patch == [
        {
            "op": "add",
            "path": "/metadata/annotations/sidecar.io~1status",
            "value": json.dumps({"profiles": {}, "skipped": {"git-sync": PERIOD_EXPECTED}}, separators=(",", ":")),
        }
    ]
    assert_skip_recorded(the_pod, decision.patch, {"git-sync": PERIOD_EXPECTED})


@pytest.mark.parametrize("metadata", [{"name": "web"}, {"name": "web", "annotations": None}, None])
def test_a_pod_without_annotations_gets_the_map_created_with_the_record(metadata):
    # the pod names nothing itself: its namespace injects git-sync into every pod, and has no repo for it
    the_pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": pod("")["spec"]}
    if metadata is not None:
        the_pod["metadata"] = metadata
    namespace = NamespaceFacts("shop", {"sidecar.io/inject": "enabled"}, {"sidecar.io/profiles": "git-sync"})
    decision = run(the_pod, namespace=namespace)

    assert decision.outcome == "skipped" and decision.reason == "invalid-values"
    text = json.dumps({"profiles": {}, "skipped": {"git-sync": MISSING_REPO}}, separators=(",", ":"))
    if metadata is None:
        assert decision.patch == [{"op": "add", "path": "/metadata", "value": {"annotations": {STATUS: text}}}]
    else:
        assert decision.patch == [{"op": "add", "path": "/metadata/annotations", "value": {STATUS: text}}]
    assert_skip_recorded(the_pod, decision.patch, {"git-sync": MISSING_REPO})


def test_a_skipped_pod_admitted_again_is_left_alone_until_it_can_be_injected():
    first = applied(pod("git-sync", **BAD_PERIOD), run(pod("git-sync", **BAD_PERIOD)))

    # a reinvocation (or the pod created again with its status): a skip, not "already injected",
    # and nothing to write, since the status already says why
    again = run(first)
    assert again.outcome == "skipped" and again.reason == "invalid-values" and again.patch == []
    assert again.skipped == {"git-sync": PERIOD_EXPECTED}

    # skipped for another reason now: the record is rewritten
    other = copy.deepcopy(first)
    other["metadata"]["annotations"]["git-sync.sidecar.io/period"] = "25h"
    rewritten = run(other)
    assert rewritten.outcome == "skipped"
    assert_skip_recorded(other, rewritten.patch, {"git-sync": rewritten.skipped["git-sync"]})
    assert "period=25h" in rewritten.skipped["git-sync"]

    # the value fixed: the record blocks nothing, the profile is injected and the record is gone
    fixed = copy.deepcopy(first)
    fixed["metadata"]["annotations"]["git-sync.sidecar.io/period"] = "30s"
    injected = run(fixed)
    assert injected.outcome == "injected" and injected.injected == ("git-sync",)
    assert status_of(applied(fixed, injected)).keys() == {"profiles"}
    assert set(status_of(applied(fixed, injected))["profiles"]) == {"git-sync"}


def test_a_skipped_pod_is_neither_stale_nor_missed_until_the_rules_would_inject_it():
    running = applied(pod("git-sync"), run(pod("git-sync")))  # no repo: skipped, recorded
    assert status_of(running) == {"profiles": {}, "skipped": {"git-sync": MISSING_REPO}}
    notes: list[str] = []
    assert stale_pods([running], PROFILES, notes) == [] and notes == []  # it records nothing injected
    policy = InjectionPolicy()
    assert missed_pods([running], PROFILES, policy) == []  # decided now, it is still skipped
    # its namespace gives a repo now: a restart would inject it, so it is missed
    shop = NamespaceFacts("shop", annotations={"git-sync.sidecar.io/repo": REPO})
    [missed] = missed_pods([running], PROFILES, policy, {"shop": shop})
    assert (missed.pod, missed.profile, missed.state) == ("web", "git-sync", "missed")


def test_unknown_and_refused_profiles_are_recorded_too():
    decision = run(pod("gitsync,logging"))
    status = status_of(applied(pod("gitsync,logging"), decision))
    assert status["skipped"] == {"gitsync": "unknown profile; did you mean git-sync?"}

    nothing = run(pod("gitsync"))
    assert nothing.outcome == "skipped" and nothing.reason == "no-known-profiles"
    assert nothing.skipped == {"gitsync": "unknown profile; did you mean git-sync?"}
    assert_skip_recorded(pod("gitsync"), nothing.patch, {"gitsync": "unknown profile; did you mean git-sync?"})


@pytest.mark.parametrize(
    "the_pod",
    [pod(""), pod("false", **BAD_PERIOD), pod("logging", **{STATUS: '{"profiles": {"logging": {}}}'})],
    ids=["nothing-requested", "opted-out", "already-injected"],
)
def test_no_record_for_a_pod_that_asked_for_nothing_new(the_pod):
    decision = run(the_pod)
    assert decision.outcome == "skipped" and decision.patch == [] and decision.skipped == {}


def test_no_status_when_nothing_was_skipped_or_the_pod_is_denied():
    assert "skipped" not in status_of(applied(pod("logging"), run(pod("logging"))))
    denied = run(pod("git-sync"), InjectionPolicy(strict=True))
    assert denied.outcome == "denied" and denied.patch == []


def test_reinvocation_adds_nothing_and_still_retries_a_skipped_profile():
    first = applied(pod("logging,git-sync"), run(pod("logging,git-sync")))

    again = run(first)
    # the skipped profile is retried (it is not among the injected ones), fails the same way,
    # and the status already says so: nothing to write
    assert again.outcome == "skipped" and again.patch == [] and again.skipped == {"git-sync": MISSING_REPO}
    assert [c["name"] for c in applied(first, again)["spec"]["containers"]] == [
        c["name"] for c in first["spec"]["containers"]
    ]

    # another webhook added the missing value meanwhile: the retry injects it and the skip is gone
    fixed = copy.deepcopy(first)
    fixed["metadata"]["annotations"]["git-sync.sidecar.io/repo"] = REPO
    retried = run(fixed)
    assert retried.outcome == "injected" and retried.injected == ("git-sync",)
    status = status_of(applied(fixed, retried))
    assert set(status["profiles"]) == {"logging", "git-sync"} and "skipped" not in status


def test_many_unknown_names_cannot_grow_the_status_without_bound():
    names = ",".join(f"nosuch{i}" for i in range(200))
    decision = run(pod(f"logging,{names}"))
    status = status_of(applied(pod(f"logging,{names}"), decision))
    assert len(status["skipped"]) <= 11
    assert len(json.dumps(status["skipped"])) < 2048


# -- warnings: did you mean, and the key that set a value -----------------------------------------------------


def test_an_unknown_profile_gets_a_did_you_mean():
    [warning] = [w for w in run(pod("gitsync,logging")).warnings if "unknown" in w]
    assert "unknown sidecar profile(s) gitsync in sidecar.io/inject (did you mean git-sync?); available: " in warning
    [warning] = [w for w in run(pod("gitsync,loging,nosuch")).warnings if "unknown" in w]
    assert "(did you mean git-sync for gitsync, logging for loging?)" in warning


def test_a_misspelt_value_prefix_gets_a_did_you_mean():
    decision = run(pod("logging", **{"loging.sidecar.io/memory-limit": "512Mi"}))
    assert decision.outcome == "injected"
    expected = "loging.sidecar.io/memory-limit on the pod names no profile: did you mean logging.sidecar.io/memory-limit?"
    assert any(expected in w for w in decision.warnings), decision.warnings


NOT_REQUESTED = "metrics.sidecar.io/memory-limit on the pod: profile metrics is not requested by sidecar.io/inject; ignored"


def test_the_offline_tools_warn_about_values_of_profiles_not_requested():
    # the decision warns (the webhook as well); inject and explain tell the author once, so
    # --fail-on warning can catch a forgotten sidecar.io/inject entry
    the_pod = pod("logging", **{"metrics.sidecar.io/memory-limit": "512Mi"})
    expected = NOT_REQUESTED
    code, _out, err = cli("inject", "-f", "-", stdin=yaml.safe_dump(the_pod))
    assert code == 0 and err.count(expected) == 1, err
    code, _out, err = cli("inject", "-f", "-", "--fail-on", "warning", stdin=yaml.safe_dump(the_pod))
    assert code == 1
    code, out, _err = cli("explain", "-f", "-", stdin=yaml.safe_dump(the_pod))
    assert expected in out


def test_the_missing_repo_warning_is_whole():
    warnings = run(pod("git-sync")).warnings
    assert any(MISSING_REPO in w for w in warnings), warnings
    assert not any("..." in w for w in warnings), warnings


def test_a_request_above_the_limit_names_the_annotation():
    decision = run(pod("logging", **{"logging.sidecar.io/memory-request": "2Gi"}))
    assert any("logging.sidecar.io/memory-request=2Gi" in w for w in decision.warnings), decision.warnings


# -- the offline tools show it -------------------------------------------------------------------------------------


def deployment(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": annotations},
                "spec": {"containers": [{"name": "web", "image": "ghcr.io/example/web:1.4.2"}]},
            },
        },
    }


def test_inject_writes_the_skips_into_the_template_and_explain_shows_them():
    partly = deployment(**{"sidecar.io/inject": "logging,git-sync"})
    code, out, err = cli("inject", "-f", "-", stdin=yaml.safe_dump(partly))
    assert code == 0, err
    template = yaml.safe_load(out)["spec"]["template"]
    assert status_of(template)["skipped"] == {"git-sync": MISSING_REPO}

    # the case: a Deployment whose only sidecar is skipped for a bad value
    only = deployment(
        **{"sidecar.io/inject": "git-sync", "git-sync.sidecar.io/repo": REPO, "git-sync.sidecar.io/period": "2s"}
    )
    code, out, err = cli("explain", "-f", "-", "-o", "json", stdin=yaml.safe_dump(only))
    assert code == 0, err
    [body] = json.loads(out)
    assert body["skipped"] == ["git-sync"]
    assert body["skippedReasons"]["git-sync"].startswith("git-sync.sidecar.io/period=2s (on the pod): expected")

    code, out, err = cli("explain", "-f", "-", stdin=yaml.safe_dump(only))
    assert "  skipped git-sync: git-sync.sidecar.io/period=2s (on the pod): expected" in out


# -- the webhook's answer ---------------------------------------------------------------------------------------


class _Namespaces:
    """The namespace source the webhook reads (runtime.interfaces.NamespaceSource), with one namespace."""

    synced = True

    def __init__(self, facts: NamespaceFacts):
        self.facts = facts

    def cached(self, name: str) -> NamespaceFacts | None:
        return self.facts if name == self.facts.name else None

    def lookup(self, name: str) -> NamespaceFacts | None:
        return self.cached(name)


def answer_for(the_pod: dict[str, Any], namespace: NamespaceFacts | None = None, metrics: Any = None) -> dict[str, Any]:
    """The webhook's AdmissionReview response for the CREATE of ``the_pod`` in namespace shop."""
    from fastapi.testclient import TestClient

    from sidecar_injector.runtime.settings import Settings
    from sidecar_injector.webhook.app import create_app

    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": the_pod,
        },
    }
    sources = _Namespaces(namespace) if namespace is not None else None
    with TestClient(create_app(Settings(), PROFILES, namespaces=sources, metrics=metrics)) as client:
        response = client.post("/mutate", json=review).json()["response"]
    assert isinstance(response, dict)
    return response


def test_the_webhooks_answer_records_the_skipped_profile_on_the_pod():
    the_pod = pod("logging,git-sync")
    answer = answer_for(the_pod)
    assert answer["allowed"] is True
    patch = json.loads(base64.b64decode(answer["patch"]))
    result = jsonpatch.apply_patch(the_pod, patch, in_place=False)
    assert status_of(result)["skipped"] == {"git-sync": MISSING_REPO}
    assert any("git-sync.sidecar.io/repo is required" in w for w in answer["warnings"])


def test_the_webhooks_answer_to_a_pod_that_got_nothing_records_why_and_counts_a_skip():
    from sidecar_injector.runtime.metrics import Metrics

    metrics = Metrics()
    the_pod = pod("git-sync", **BAD_PERIOD)
    answer = answer_for(the_pod, metrics=metrics)
    assert_skipped_answer(answer, the_pod, {"git-sync": PERIOD_EXPECTED})
    assert any(PERIOD_EXPECTED in w for w in answer["warnings"]), answer
    # a skip it stays: the metrics count it as one, for its reason
    assert metrics.skips.labels("invalid-values")._value.get() == 1
    assert metrics.requests.labels("skipped")._value.get() == 1
    assert metrics.requests.labels("injected")._value.get() == 0


def test_the_webhook_warns_about_a_value_on_the_pod_for_a_profile_it_does_not_request():
    answer = answer_for(pod("logging", **{"metrics.sidecar.io/memory-limit": "512Mi"}))
    assert answer["allowed"] is True and "patch" in answer  # logging is injected all the same
    assert answer["warnings"] == [f"sidecar-injector: {NOT_REQUESTED}"]


def test_the_same_value_on_the_namespace_is_a_default_and_not_warned_about():
    shop = NamespaceFacts("shop", annotations={"metrics.sidecar.io/memory-limit": "512Mi"})
    answer = answer_for(pod("logging"), namespace=shop)
    assert answer["allowed"] is True and "patch" in answer
    assert "warnings" not in answer, answer["warnings"]
