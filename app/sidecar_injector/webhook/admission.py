"""The ``admission.k8s.io/v1`` AdmissionReview wire format.

Typed models for the envelope only: the object under admission stays a raw dict so that
every field of the pod — including ones this code has never heard of — survives.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidecar_injector.core.decision import Decision
from sidecar_injector.core.inputs import NamespaceFacts, RequestContext
from sidecar_injector.profiles.loading import ProfileError

ADMISSION_API_VERSION = "admission.k8s.io/v1"


class GroupVersionKind(BaseModel):
    model_config = ConfigDict(extra="ignore")

    group: str = ""
    version: str = ""
    kind: str = ""


_PODS = ("", "v1", "pods")


def _describe(gvk: GroupVersionKind) -> str:
    """``apps/v1 Deployment``, ``v1 Service``: what a request says it admits, for a skip message."""
    if not gvk.kind:
        return "(kind missing)"
    version = f"{gvk.group}/{gvk.version}" if gvk.group else gvk.version or "(no version)"
    return f"{version} {gvk.kind}"


class AdmissionRequest(BaseModel):
    """The fields of ``request`` the webhook uses; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    uid: str = Field(min_length=1, max_length=256)
    kind: GroupVersionKind = Field(default_factory=GroupVersionKind)
    #: group, version and resource (a plain map: a model per request costs more than it checks)
    resource: dict[str, Any] | None = None
    sub_resource: str = Field("", alias="subResource")
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    namespace: str | None = Field(None, max_length=253)
    name: str | None = None
    object: dict[str, Any] | None = None
    #: the object before an UPDATE (profile validation lets a change that leaves ``spec`` alone through)
    old_object: dict[str, Any] | None = Field(None, alias="oldObject")
    dry_run: bool = Field(False, alias="dryRun")

    @model_validator(mode="after")
    def _create_has_object(self) -> AdmissionRequest:
        if self.operation == "CREATE" and self.object is None:
            raise ValueError("a CREATE request must carry the object being created")
        return self

    @property
    def admits_a_pod(self) -> bool:
        """Whether the object is a pod: kind core/v1 Pod and, when named, resource core/v1 pods, no subresource.

        Anything else (no kind, ``apps/v1 Deployment``, ``v1 Service``, ``pods/ephemeralcontainers``)
        is never treated as a pod, whatever its object looks like.
        """
        kind, resource = self.kind, self.resource
        return (
            kind.kind == "Pod"
            and kind.version == "v1"
            and not kind.group
            and not self.sub_resource
            and (resource is None or (resource.get("group", ""), resource.get("version"), resource.get("resource")) == _PODS)
        )

    @property
    def object_kind(self) -> str:
        """``Pod`` for a pod (:attr:`admits_a_pod`), else a description of what the request names."""
        if self.admits_a_pod:
            return "Pod"
        described = _describe(self.kind)
        if self.kind.kind == "Pod":  # the kind is right: the resource or subresource is not
            resource = str((self.resource or {}).get("resource", ""))
            described += f" (resource {resource}{'/' + self.sub_resource if self.sub_resource else ''})"
        return described

    def context(
        self,
        namespace_facts: NamespaceFacts | None = None,
        namespace_unavailable: bool = False,
        object_bytes: int | None = None,
    ) -> RequestContext:
        return RequestContext(
            operation=self.operation,
            kind=self.object_kind,
            namespace=self.namespace,
            dry_run=self.dry_run,
            namespace_facts=namespace_facts,
            namespace_unavailable=namespace_unavailable,
            object_bytes=object_bytes,
        )


class AdmissionReview(BaseModel):
    """An incoming review. ``apiVersion``/``kind`` are checked: v1 is all we speak."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def review_response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answer for a decision, as the API server requires it.

    ``patchType`` appears only together with ``patch``; a denial carries a status with a
    code >= 400 (403, as admission denials conventionally are) and a message a person can
    act on.
    """
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:  # an injection, or a skipped pod's record of why (sidecar.io/status alone)
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(decision.encoded_patch()).decode("ascii")
    if decision.outcome == "denied":
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message,
        }
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def validation_response(uid: str, problems: list[str], warnings: list[str] | None = None) -> dict[str, Any]:
    """The AdmissionReview answer of a validating webhook: allowed, or refused (422 Invalid) with
    ``problems`` as the message, one per line as ``profiles validate`` prints them."""
    response: dict[str, Any] = {"uid": uid, "allowed": not problems}
    if problems:
        response["status"] = {
            "code": 422,
            "reason": "Invalid",
            "message": str(ProfileError(problems)),
        }
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}
