"""
Hostile cluster messages: forged, tampered, replayed, stale, stale-epoch,
wrong-cluster, unauthenticated and out-of-turn ones are rejected, counted,
and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from srp.authenticator import FRESHNESS, ClusterAuthenticator
from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from srp.wire.cluster import (
    Activate,
    Join,
    KeepAliveAck,
    ReJoin,
    clusterId,
    decodeEnvelope,
    isClusterMessage,
)
from tests.cluster_sim import INTERVAL, KEY, MISSES

EVIL = Registration(InstanceInfo("EVIL", "EVIL", tcp=6666), nodeId=666)


class Harness:
    """An active and a passive on a fake network, and a recorder of what they send."""

    def __init__(self, key: bytes = KEY, shared: bool = False) -> None:
        self.hosts = ["127.0.0.1"] * 2 if shared else ["10.0.0.1", "10.0.0.2"]
        self.network = FakeNetwork(seed=1)
        self.sent: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        original = self.network.send

        def record(source: tuple[str, int], destination: tuple[str, int],
                   datagram: bytes) -> None:
            self.sent.append((source, destination, datagram))
            original(source, destination, datagram)

        self.network.send = record  # type: ignore[method-assign]
        self.nodes = [self.node(n, key) for n in range(2)]
        self.run(2.0)
        self.active, self.passive = sorted(self.nodes, key=lambda n: n.role != "active")
        assert (self.active.role, self.passive.role) == ("active", "passive")

    def node(self, index: int, key: bytes) -> NodeService:
        host = self.hosts[index]
        config = NodeConfig(
            listen=(host,), port=1434,
            instances=(Registration(InstanceInfo(f"H{index}", f"N{index}", tcp=1000 + index)),),
            cluster=ClusterConfig(name="adv", addresses=tuple(sorted(set(self.hosts))),
                                  interval=INTERVAL, misses=MISSES, key=key),
        )
        service = NodeService(config, self.network.reactor(host), nodeId=index + 1)
        service.startService()
        return service

    def run(self, seconds: float) -> None:
        end = self.network.clock.seconds() + seconds
        while self.network.clock.seconds() < end:
            self.network.clock.advance(0.01)

    def inject(self, datagram: bytes, to: NodeService, port: int | None = None,
               source: str = "10.0.0.99") -> None:
        host = to.config.listen[0]
        target = port if port is not None else (
            1434 if to.role == "active" else to.membership._socketPort.port)
        self.network.send((source, 5555), (host, target), datagram)
        self.run(0.05)

    def captured(self, kind: type) -> bytes:
        for _, _, datagram in self.sent:
            if isClusterMessage(datagram) and isinstance(
                    decodeEnvelope(datagram, KEY, clusterId("adv")).message, kind):
                return datagram
        raise AssertionError(f"no {kind.__name__} was sent")

    def registered(self) -> set[Registration]:
        return set(self.active.registry.registrations())


def attacker(harness: Harness, key: bytes = KEY, cluster: str = "adv",
             nodeId: int = 666) -> ClusterAuthenticator:
    return ClusterAuthenticator(harness.network.clock, clusterId(cluster), nodeId, key)


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda h: attacker(h, key=b"not the cluster key!").seal(Join((EVIL,)), 1), "tag"),
        (lambda h: attacker(h, cluster="other").seal(Join((EVIL,)), 1), "cluster"),
        (lambda h: h.captured(Join)[:-1] + bytes([h.captured(Join)[-1] ^ 0x80]), "tag"),
        (lambda h: h.captured(Join)[:45], "truncated"),
        (lambda h: h.captured(Join), "replayed"),
    ],
)
def test_rejected_join_changes_nothing(forge: Callable[[Harness], bytes], reason: str) -> None:
    harness = Harness()
    before = harness.registered()
    harness.inject(forge(harness), harness.active)
    assert harness.registered() == before
    assert harness.active.membership.auth.rejected[reason] == 1
    assert EVIL not in harness.registered()


def test_stale_capture_is_rejected_even_by_a_new_node() -> None:
    harness = Harness()
    capture = harness.captured(Join)
    harness.run(FRESHNESS + 1)
    before = harness.registered()
    harness.inject(capture, harness.active)
    assert harness.active.membership.auth.rejected["stale"] == 1
    assert harness.registered() == before


def test_replayed_join_after_leave_does_not_resurrect() -> None:
    harness = Harness()
    capture = harness.captured(Join)
    harness.passive.stopService()
    harness.run(0.1)
    gone = harness.passive.membership.own
    assert not set(gone) & harness.registered()
    harness.inject(capture, harness.active)
    assert not set(gone) & harness.registered()
    assert harness.active.membership.auth.rejected["replayed"] == 1


def test_stale_epoch_ack_is_ignored_by_a_passive() -> None:
    harness = Harness()
    insider = attacker(harness, nodeId=999)
    harness.inject(insider.seal(KeepAliveAck(()), epoch=0), harness.passive)
    assert harness.passive.membership.counters["stale_epoch"] == 1
    assert harness.passive.membership.current.active.nodeId == harness.active.membership.nodeId
    harness.run(2.0)
    assert harness.passive.role == "passive"


def test_activate_from_a_node_that_is_not_the_active_is_refused() -> None:
    harness = Harness()
    insider = attacker(harness, nodeId=999)
    harness.inject(insider.seal(Activate((), (EVIL,), ()), epoch=9), harness.passive)
    assert harness.passive.membership.counters["activate_refused"] == 1
    assert harness.passive.role == "passive"
    assert EVIL not in set(harness.passive.registry.registrations())


def test_rejoin_from_a_stranger_is_ignored() -> None:
    harness = Harness()
    joins = harness.passive.membership.counters["joins_sent"]
    harness.inject(attacker(harness, nodeId=999).seal(ReJoin(), 1), harness.passive)
    assert harness.passive.membership.counters["joins_sent"] == joins


def test_join_cannot_register_for_another_node() -> None:
    harness = Harness()
    harness.inject(attacker(harness).seal(Join((EVIL, Registration(
        InstanceInfo("X", "STOLEN", tcp=1), nodeId=harness.passive.membership.nodeId))), 1),
        harness.active)
    names = {r.name for r in harness.registered()}
    assert "EVIL" in names
    assert "STOLEN" not in names


def test_without_a_key_only_loopback_is_heard() -> None:
    harness = Harness(key=b"", shared=True)
    spoof = attacker(harness, key=b"").seal(Join((EVIL,)), 1)
    harness.inject(spoof, harness.active, source="10.0.0.99")
    assert EVIL not in harness.registered()
    assert harness.active.membership.auth.rejected["unauthenticated"] == 1
    harness.inject(attacker(harness, key=b"", nodeId=667).seal(Join((
        Registration(EVIL.info, nodeId=667),)), 1), harness.active, source="127.0.0.5")
    assert "EVIL" in {r.name for r in harness.registered()}
