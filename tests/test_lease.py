"""The Lease elector, against the fake API server, on a clock the test moves: leadership ends on
this process's own clock, another holder's Lease expires only by observation, one winner."""

from __future__ import annotations

from typing import Any

import pytest

from kube_fake_api import FakeKubeApi
from sidecar_injector.cluster.kube import new_api_client
from sidecar_injector.cluster.lease import LeaseElector

LEASES = "coordination.k8s.io/v1/leases"
NAMESPACE = "sidecar-injector"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(fake: FakeKubeApi, identity: str, clock: Clock, changes: list[bool] | None = None) -> LeaseElector:
    return LeaseElector(
        new_api_client(fake.configuration()),
        "status",
        NAMESPACE,
        identity,
        lease_duration_seconds=15,
        renew_deadline_seconds=10,
        retry_period_seconds=2,
        on_change=changes.append if changes is not None else None,
        clock=clock,
    )


def holder(fake: FakeKubeApi) -> Any:
    lease = fake.get_object(LEASES, NAMESPACE, "status")
    return lease and lease["spec"].get("holderIdentity")


def test_a_leader_that_was_frozen_past_its_renew_deadline_no_longer_leads_before_any_call(fake: FakeKubeApi) -> None:
    clock, changes = Clock(), []
    a = elector(fake, "a", clock, changes)
    assert a.step() and a.leading() and holder(fake) == "a" and changes == [True]
    clock.now += 9.9
    assert a.leading() and a.remaining() == pytest.approx(0.1)
    clock.now += 0.2  # a SIGSTOP, a long pause: no renew happened, the deadline passed
    assert not a.leading() and a.remaining() == 0
    assert a.step()  # it may lead again only by renewing (nobody took the Lease meanwhile)
    assert a.leading()


def test_another_replica_takes_the_lease_only_after_seeing_it_unchanged_for_its_duration(fake: FakeKubeApi) -> None:
    clock_a, clock_b, changes_a = Clock(), Clock(), []
    a, b = elector(fake, "a", clock_a, changes_a), elector(fake, "b", clock_b)
    assert a.step()
    assert not b.step()  # first sight of a's record
    clock_b.now += 14.0
    assert not b.step()  # unchanged, but not for 15 s yet
    clock_a.now += 2.0
    assert a.step()  # a renews: a new record, b's observation starts again
    clock_b.now += 2.0
    assert not b.step()
    clock_b.now += 14.9
    assert not b.step()
    clock_b.now += 0.2  # 15 s without a renew, on b's own clock: a's deadline (10 s) is long past
    assert b.step() and holder(fake) == "b"
    assert not a.step()  # a sees another holder and stops at once
    assert changes_a == [True, False]
    lease = fake.get_object(LEASES, NAMESPACE, "status")
    assert lease["spec"]["leaseTransitions"] == 1


def test_a_released_lease_is_taken_at_once(fake: FakeKubeApi) -> None:
    clock = Clock()
    a, b = elector(fake, "a", clock), elector(fake, "b", clock)
    assert a.step() and not b.step()
    a.release()
    assert not a.leading()
    assert b.step() and holder(fake) == "b"


def test_durations_that_would_let_two_replicas_lead_are_refused(fake: FakeKubeApi) -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        LeaseElector(
            new_api_client(fake.configuration()), "x", NAMESPACE, "a", lease_duration_seconds=10, renew_deadline_seconds=10
        )
