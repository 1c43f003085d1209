"""
The address rule on a fake network: an address answers only with ports that
listen at it.  The active answers its own host's registrations as they are,
another host's through a relay at its own address; and the extended resolve
needs no cluster name.
"""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve
from twisted.internet.protocol import DatagramProtocol

from srp.authenticator import ClusterAuthenticator, Rejected
from srp.client.resolver import ClusterResolver, Resolution
from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, ConfigError, NodeConfig, parseConfig
from srp.server.health import HealthSettings
from srp.server.node import NodeService
from srp.server.registry import Registry
from srp.server.remote import RemoteRelays
from srp.testing import FakeNetwork
from srp.wire import (
    BroadcastRequest,
    DACRequest,
    DACResponse,
    InstanceRequest,
    InstancesResponse,
    decodeResponse,
)
from srp.wire.cluster import ANY_CLUSTER, Join, Member, Resolve, StatusQuery, clusterId
from tests.cluster_sim import SimCluster, unreachable, violations

KEY = b"0123456789abcdef0123456789abcdef"
INTERVAL = 0.25
CLIENT = "10.0.0.99"


def registration(name: str, tcp: int, priority: int = 0, **info: Any) -> Registration:
    return Registration(InstanceInfo(f"H{tcp}", name, tcp=tcp, **info), priority=priority,
                        dacPort=tcp + 1)


#: What each node registers: LOCAL on the first node (the active); REMOTE on
#: the second; MOVE on the second, third and first, in that order of priority.
INSTANCES = [
    (registration("LOCAL", 1000, np=r"\\H1000\pipe\sql\query"), registration("MOVE", 3000, 2)),
    (registration("REMOTE", 2000, np=r"\\H2000\pipe\sql\query"), registration("MOVE", 3001, 0)),
    (registration("MOVE", 3002, 1),),
]


class Collector(DatagramProtocol):
    def __init__(self) -> None:
        self.replies: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.replies.append((datagram, addr))


class Lan:
    """Nodes each on its own host (or all on one), the first started the active."""

    def __init__(self, hosts: list[str], key: bytes = KEY, name: str = "lan") -> None:
        self.network = FakeNetwork(seed=7)
        self.hosts = hosts
        self.nodes: list[NodeService] = []
        for index, own in enumerate(INSTANCES):
            self.nodes.append(self.start(index, own, key, name))
            self.run(2.0 if index == 0 else 0.5)
        assert [n.role for n in self.nodes] == ["active", "passive", "passive"]
        self.client = Collector()
        self.network.reactor(CLIENT).listenUDP(0, self.client)

    def start(self, index: int, own: tuple[Registration, ...], key: bytes,
              name: str) -> NodeService:
        host = self.hosts[index]
        config = NodeConfig(
            listen=(host,), port=1434, instances=own,
            cluster=ClusterConfig(name=name, addresses=tuple(sorted(set(self.hosts))),
                                  interval=INTERVAL, misses=3, key=key),
            health={r.key: HealthSettings(check="none") for r in own})
        service = NodeService(config, self.network.reactor(host), nodeId=index + 1)
        service.startService()
        return service

    @property
    def active(self) -> NodeService:
        return self.nodes[0]

    def run(self, seconds: float) -> None:
        end = self.network.clock.seconds() + seconds
        while self.network.clock.seconds() < end:
            self.network.clock.advance(0.01)

    def ask(self, request: bytes, address: str | None = None) -> list[InstanceInfo]:
        """What C{address} (the active's) answers to C{request}, decoded."""
        self.client.replies.clear()
        self.client.transport.write(request, (address or self.hosts[0], 1434))  # type: ignore[union-attr]
        self.run(0.05)
        infos: list[InstanceInfo] = []
        for datagram, _ in self.client.replies:
            response = decodeResponse(datagram)
            assert isinstance(response, InstancesResponse)
            infos.extend(response.instances)
        return infos

    def answer(self, name: str) -> InstanceInfo | None:
        infos = self.ask(InstanceRequest(name).encode())
        assert len(infos) <= 1
        return infos[0] if infos else None

    def relayTarget(self, name: str) -> tuple[str, int] | None:
        relay = self.active.membership.remote.relays.get(name.upper())
        return None if relay is None else relay.target

    def listening(self, port: int | None) -> bool:
        return (self.hosts[0], port) in self.network.listeners

    def setDown(self, index: int, name: str, down: bool = True) -> None:
        membership = self.nodes[index].membership
        membership.updateOwn([evolve(r, down=down) if r.name == name else r
                              for r in membership.own])
        self.run(0.1)


def multiHost() -> Lan:
    return Lan(["10.0.0.1", "10.0.0.2", "10.0.0.3"])


def test_own_host_registration_is_answered_as_registered() -> None:
    lan = multiHost()
    assert lan.answer("LOCAL") == INSTANCES[0][0].info
    assert lan.relayTarget("LOCAL") is None


def test_another_hosts_registration_is_answered_with_a_relay_at_the_active() -> None:
    lan = multiHost()
    info = lan.answer("REMOTE")
    assert info is not None and info.tcp is not None
    assert info.tcp != 2000
    assert lan.listening(info.tcp)
    assert lan.relayTarget("REMOTE") == ("10.0.0.2", 2000)
    # tcp only: the other host's pipe is not reachable here.
    assert (info.serverName, info.np, info.via) == ("H2000", None, None)
    assert lan.answer("REMOTE") == info  # the relay's port is stable


def test_a_relayed_answer_has_no_dac_port() -> None:
    lan = multiHost()
    lan.client.replies.clear()
    for name in ("LOCAL", "REMOTE"):
        lan.client.transport.write(  # type: ignore[union-attr]
            DACRequest(name).encode(), (lan.hosts[0], 1434))
    lan.run(0.05)
    assert [d for d, _ in lan.client.replies] == [DACResponse(1001).encode()]


def test_enumeration_lists_relays_for_other_hosts() -> None:
    lan = multiHost()
    infos = {i.instanceName: i for i in lan.ask(BroadcastRequest().encode())}
    assert infos["LOCAL"] == INSTANCES[0][0].info
    assert infos["REMOTE"] == lan.answer("REMOTE")
    assert infos["MOVE"] == lan.answer("MOVE")


def test_health_failover_retargets_the_relay_and_keeps_its_port() -> None:
    lan = multiHost()
    first = lan.answer("MOVE")
    assert first is not None and lan.relayTarget("MOVE") == ("10.0.0.2", 3001)
    lan.setDown(1, "MOVE")
    second = lan.answer("MOVE")
    assert second is not None and (second.serverName, second.tcp) == ("H3002", first.tcp)
    assert lan.relayTarget("MOVE") == ("10.0.0.3", 3002)
    assert lan.listening(first.tcp)
    lan.setDown(1, "MOVE", down=False)
    assert lan.answer("MOVE") == first
    assert lan.relayTarget("MOVE") == ("10.0.0.2", 3001)


def test_the_relay_closes_when_the_answer_is_local_again() -> None:
    lan = multiHost()
    relayed = lan.answer("MOVE")
    assert relayed is not None
    lan.setDown(1, "MOVE")
    lan.setDown(2, "MOVE")
    assert lan.answer("MOVE") == INSTANCES[0][1].info
    assert lan.relayTarget("MOVE") is None
    assert not lan.listening(relayed.tcp)


def test_the_relay_closes_when_the_instance_goes_away() -> None:
    lan = multiHost()
    relayed = lan.answer("REMOTE")
    assert relayed is not None
    lan.nodes[1].stopService()
    lan.run(0.5)
    assert lan.answer("REMOTE") is None
    assert not lan.listening(relayed.tcp)
    assert lan.active.membership.remote.relays.keys() == {"MOVE"}


def test_stopping_the_active_closes_its_relays() -> None:
    lan = multiHost()
    assert lan.answer("REMOTE") is not None
    lan.active.stopService()
    lan.run(1.0)
    assert not [a for a in lan.network.listeners if a[0] == lan.hosts[0]]


def test_one_host_answers_every_registration_as_registered() -> None:
    lan = Lan(["127.0.0.1"] * 3)
    assert lan.answer("REMOTE") == INSTANCES[1][0].info
    assert lan.answer("MOVE") == INSTANCES[1][1].info
    assert lan.network.listeners == {}


def resolve(lan: Lan, instance: str, key: bytes = KEY, clusterName: str | None = None,
            client: str = CLIENT) -> Resolution:
    resolver = ClusterResolver(lan.network.reactor(client), key=key, clusterName=clusterName)
    results: list[Resolution] = []
    resolver.resolve(lan.hosts[0], instance).addCallback(results.append)
    lan.run(1.0)
    [resolution] = results
    return resolution


def test_resolve_without_a_cluster_name_reports_the_registering_host() -> None:
    lan = multiHost()
    resolution = resolve(lan, "MOVE")
    assert resolution.extended
    assert [(c.host, c.info.tcp) for c in resolution.candidates] == [
        ("10.0.0.2", 3001), ("10.0.0.3", 3002), ("10.0.0.1", 3000)]


def test_resolve_with_the_cluster_name_still_works() -> None:
    lan = multiHost()
    resolution = resolve(lan, "REMOTE", clusterName="lan")
    assert resolution.extended
    assert [(c.host, c.info.tcp) for c in resolution.candidates] == [("10.0.0.2", 2000)]


def test_resolve_with_the_wrong_key_falls_back_to_the_relayed_plain_answer() -> None:
    lan = multiHost()
    resolution = resolve(lan, "REMOTE", key=b"another key of thirty-two bytes!")
    assert not resolution.extended
    [candidate] = resolution.candidates
    assert candidate.host == "10.0.0.1"
    assert lan.listening(candidate.info.tcp)
    assert lan.active.membership.auth.rejected["tag"] >= 1


def test_resolve_without_key_or_name_on_a_loopback_cluster() -> None:
    lan = Lan(["127.0.0.2", "127.0.0.3", "127.0.0.4"], key=b"", name="other")
    resolution = resolve(lan, "REMOTE", key=b"", client="127.0.0.99")
    assert resolution.extended
    assert [(c.host, c.info.tcp) for c in resolution.candidates] == [("127.0.0.3", 2000)]


def test_any_cluster_is_accepted_for_resolve_and_status_only() -> None:
    network = FakeNetwork()
    node = ClusterAuthenticator(network.clock, clusterId("lan"), 1, KEY)
    asker = ClusterAuthenticator(network.clock, ANY_CLUSTER, 2, KEY)
    assert node.open(asker.seal(Resolve("X"), 0), CLIENT).message == Resolve("X")
    assert node.open(asker.seal(StatusQuery(), 0), CLIENT).message == StatusQuery()
    with pytest.raises(Rejected) as caught:
        node.open(asker.seal(Join((registration("X", 1),)), 0), CLIENT)
    assert caught.value.reason == "cluster"
    # The reply carries the node's real cluster id, and the asker takes it.
    assert asker.open(node.seal(StatusQuery(), 0), CLIENT).cluster == clusterId("lan")


def test_any_cluster_still_needs_the_key() -> None:
    network = FakeNetwork()
    node = ClusterAuthenticator(network.clock, clusterId("lan"), 1, KEY)
    asker = ClusterAuthenticator(network.clock, ANY_CLUSTER, 2, b"another key, 32 bytes, wrong!!")
    with pytest.raises(Rejected) as caught:
        node.open(asker.seal(Resolve("X"), 0), CLIENT)
    assert caught.value.reason == "tag"


def test_any_cluster_without_a_key_is_loopback_only() -> None:
    network = FakeNetwork()
    node = ClusterAuthenticator(network.clock, clusterId("lan"), 1)
    asker = ClusterAuthenticator(network.clock, ANY_CLUSTER, 2)
    assert node.open(asker.seal(Resolve("X"), 0), "127.0.0.5").message == Resolve("X")
    with pytest.raises(Rejected) as caught:
        node.open(asker.seal(Resolve("X"), 0), CLIENT)
    assert caught.value.reason == "unauthenticated"


def test_a_cluster_name_with_the_reserved_id_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("srp.server.config.clusterId", lambda name: ANY_CLUSTER)
    with pytest.raises(ConfigError, match="reserved for queries that name no cluster"):
        parseConfig({"node": {"listen": ["127.0.0.1"]}, "cluster": {"name": "unlucky"}})


def test_an_active_on_a_wildcard_relays_only_to_other_machines() -> None:
    network = FakeNetwork()
    relays = RemoteRelays(network.reactor("10.0.0.1"), Registry(), ("0.0.0.0",))
    relays.passivesAre([Member(2, "127.0.0.1", 5000), Member(3, "192.0.2.7", 5000)])
    assert relays.hosts == {3: "192.0.2.7"}


def test_no_answer_names_a_port_unreachable_at_the_active_through_takeovers() -> None:
    cluster = SimCluster(FakeNetwork(seed=11), sharedHost=False, size=5)
    cluster.startAll()
    cluster.run(3.0)
    for _ in range(3):
        assert violations(cluster) == []
        assert unreachable(cluster) == []
        [active] = cluster.actives()
        # Every other live node's own instance is answered through a relay.
        assert len(active.service.membership.remote.relays) >= len(cluster.live()) - 1
        cluster.crash(cluster.nodes.index(active))
        cluster.run(3.0)
    assert violations(cluster) == []
    assert unreachable(cluster) == []
    # The crashed actives' relays are gone with them.
    live = {n.host for n in cluster.live()}
    assert {host for host, _ in cluster.network.listeners} <= live
