"""Cluster roles on a fake network: election, takeover, hand-over, expiry, fencing."""

from __future__ import annotations

import pytest

from srp.testing import FakeNetwork
from tests.cluster_sim import EXPIRY, INTERVAL, SimCluster, violations


def cluster(sharedHost: bool = True, size: int = 3, **network: float) -> SimCluster:
    result = SimCluster(FakeNetwork(**network), sharedHost=sharedHost,  # type: ignore[arg-type]
                        size=size)
    result.startAll()
    return result


@pytest.mark.parametrize("sharedHost", [True, False])
def test_one_active_and_every_registration(sharedHost: bool) -> None:
    nodes = cluster(sharedHost)
    nodes.run(2.0)
    assert violations(nodes) == []
    assert sorted(nodes.roles()) == ["active", "passive", "passive"]


@pytest.mark.parametrize("sharedHost", [True, False])
def test_crash_of_the_active_is_taken_over_within_a_second(sharedHost: bool) -> None:
    nodes = cluster(sharedHost)
    nodes.run(2.0)
    [old] = nodes.actives()
    index = nodes.nodes.index(old)
    nodes.crash(index)
    died = nodes.network.clock.seconds()
    while not nodes.actives():
        nodes.run(0.01)
        assert nodes.network.clock.seconds() - died < 1.5
    assert nodes.network.clock.seconds() - died <= 1.0 + 2 * INTERVAL
    nodes.run(2.0)
    assert violations(nodes) == []
    [new] = nodes.actives()
    assert new.service.membership.epoch == old.service.membership.epoch + 1


@pytest.mark.parametrize("sharedHost", [True, False])
def test_graceful_stop_hands_over_with_the_registry(sharedHost: bool) -> None:
    nodes = cluster(sharedHost)
    nodes.run(2.0)
    [old] = nodes.actives()
    first = old.service.membership.current.passives[0].nodeId
    nodes.stop(nodes.nodes.index(old))
    nodes.run(0.05)
    [new] = nodes.actives()
    assert new.service.membership.nodeId == first
    assert old.service.role == "stopped"
    others = [n for n in nodes.live() if n is not new]
    held = set(new.service.registry.registrations())
    for node in others:
        assert set(node.registrations) <= held, "the registry came with Activate"
    nodes.run(1.0)
    assert violations(nodes) == []


def test_passive_crash_expires_its_registrations() -> None:
    nodes = cluster()
    nodes.run(2.0)
    [active] = nodes.actives()
    index = next(i for i, n in enumerate(nodes.nodes) if n is not active)
    gone = nodes.nodes[index].registrations
    nodes.crash(index)
    nodes.run(EXPIRY + INTERVAL)
    assert not set(gone) & set(active.service.registry.registrations())
    passives = active.service.membership.current.passives
    assert [p.nodeId for p in passives].count(gone[0].nodeId) == 0


def test_passive_graceful_stop_leaves_at_once() -> None:
    nodes = cluster()
    nodes.run(2.0)
    [active] = nodes.actives()
    index = next(i for i, n in enumerate(nodes.nodes) if n is not active)
    gone = nodes.nodes[index].registrations
    nodes.stop(index)
    nodes.run(0.05)
    assert not set(gone) & set(active.service.registry.registrations())
    assert active.service.membership.counters["leaves"] == 1


def test_standby_is_answered_when_the_primary_node_dies() -> None:
    nodes = cluster(size=3)
    nodes.run(2.0)
    before = nodes.answered("SHARED")
    assert before is not None and before.priority == 0
    if nodes.nodes[0].service.role == "active":
        nodes.stop(0)
    else:
        nodes.crash(0)
    nodes.run(EXPIRY + 3.0)
    after = nodes.answered("SHARED")
    assert after is not None and after.priority == 2
    assert after.info.tcp == 30002


def test_partition_heals_to_one_active_with_the_higher_epoch() -> None:
    nodes = cluster(sharedHost=False, size=5)
    nodes.run(2.0)
    [active] = nodes.actives()
    minority = {active.host, nodes.nodes[(nodes.nodes.index(active) + 1) % 5].host}
    majority = {n.host for n in nodes.nodes} - minority
    nodes.network.partition(minority, majority)
    nodes.run(3.0)
    assert len(nodes.actives()) == 2
    epochs = sorted(n.service.membership.epoch for n in nodes.actives())
    nodes.network.heal()
    nodes.run(3.0)
    assert violations(nodes) == []
    [winner] = nodes.actives()
    assert winner.service.membership.epoch == epochs[-1]
    assert sum(n.service.membership.counters["step_downs"] for n in nodes.nodes) >= 1


def test_lossy_duplicating_network_still_converges() -> None:
    nodes = cluster(sharedHost=False, size=5, loss=0.1, duplicate=0.05)
    nodes.run(6.0)
    nodes.network.loss = 0.0
    nodes.run(3.0)
    assert violations(nodes) == []
