"""What a skipped pod's answer may change: its ``sidecar.io/status`` annotation, and nothing else.

A pod that requested profiles and gets none of them is admitted with a patch that records, in
``sidecar.io/status``, the profiles it had injected before (``profiles``, usually ``{}``) and each
requested profile that was skipped and why (``skipped``) — the record a partly injected pod
carries (docs/injection.md, "When a sidecar is missing"). These helpers check exactly that.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Collection, Mapping
from typing import Any

import jsonpatch

from sidecar_injector.core.plan import recorded_profiles

STATUS = "sidecar.io/status"
_STATUS_PATH = "/metadata/annotations/sidecar.io~1status"


def record_of(pod: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """The status a skipped pod's ``patch`` writes, once checked that it touches nothing else: only
    ``add`` operations, of the status annotation (or of the annotations map, or the metadata, when
    the pod has none), and the patched pod equal to ``pod`` but for that one annotation."""
    assert patch, "a pod whose requested profiles were skipped records them"
    paths = {"/metadata", "/metadata/annotations", _STATUS_PATH}
    assert all(op["op"] == "add" and op["path"] in paths for op in patch), patch
    patched = jsonpatch.apply_patch(pod, copy.deepcopy(patch), in_place=False)
    annotations = patched["metadata"]["annotations"]
    assert set(annotations) - set(_annotations(pod)) <= {STATUS}, patch
    assert _without_status(patched) == _without_status(pod), "the patch changes more than sidecar.io/status"
    status = json.loads(annotations[STATUS])
    assert isinstance(status, dict) and set(status) == {"profiles", "skipped"}, status
    return status


def assert_skip_recorded(
    pod: dict[str, Any],
    patch: list[dict[str, Any]],
    skipped: Mapping[str, str] | Collection[str],
    injected_before: Collection[str] | None = None,
) -> dict[str, Any]:
    """``patch`` records exactly ``skipped`` (names, or names and why) and keeps the profiles the pod
    had injected before (by default: those its own status records) as its injected ones; returns the status."""
    if injected_before is None:
        injected_before = recorded_profiles(_annotations(pod).get(STATUS)) or {}
    status = record_of(pod, patch)
    if isinstance(skipped, Mapping):
        assert status["skipped"] == dict(skipped), status
    else:
        assert set(status["skipped"]) == set(skipped), status
    assert set(status["profiles"]) == set(injected_before), status
    return status


def record_cannot_fit(pod: dict[str, Any], skipped: Collection[str]) -> bool:
    """Whether even the shortest record of ``skipped`` (each "unknown profile") would take the pod's
    annotations over the API server's 256 KiB: then the pod gets no record at all."""
    shortest = json.dumps({"profiles": {}, "skipped": dict.fromkeys(skipped, "unknown profile")}, separators=(",", ":"))
    annotations = {**_annotations(pod), STATUS: shortest}
    size = sum(
        len(str(k).encode("utf-8", "surrogatepass")) + len(str(v).encode("utf-8", "surrogatepass"))
        for k, v in annotations.items()
    )
    return size > 256 * 1024


def response_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch of an AdmissionReview ``response`` ([] without one)."""
    if "patch" not in response:
        assert "patchType" not in response, response
        return []
    assert response["patchType"] == "JSONPatch", response
    patch = json.loads(base64.b64decode(response["patch"]))
    assert isinstance(patch, list)
    return patch


def assert_skipped_answer(
    response: dict[str, Any], pod: dict[str, Any], skipped: Mapping[str, str] | Collection[str]
) -> None:
    """The webhook's answer to a pod whose requested profiles were all skipped: admitted, and
    patched to record ``skipped`` in its status alone."""
    assert response["allowed"] is True, response
    assert "status" not in response or response["status"].get("code", 200) < 400, response
    assert_skip_recorded(pod, response_patch(response), skipped)


def _annotations(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def _without_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with its status annotation (and an annotations map or metadata left empty by it) dropped."""
    copied = copy.deepcopy(pod)
    metadata = copied.get("metadata")
    if not isinstance(metadata, dict):
        return copied
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(STATUS, None)
    if not annotations:
        metadata.pop("annotations", None)
    if not metadata:
        copied.pop("metadata", None)
    return copied
