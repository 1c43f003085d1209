"""The resolver, step by step of figure 3, on a fake network and a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from srp.client.resolver import (
    ClusterResolver,
    ClusterSilent,
    MalformedReply,
    Resolution,
    TooManyResolves,
    UnknownInstance,
)
from srp.records import InstanceInfo, Registration
from srp.server.config import NodeConfig
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from tests.cluster_sim import SimCluster

SALES = Registration(InstanceInfo("DB1", "SALES", tcp=50101), dacPort=50111)


def node(network: FakeNetwork, host: str, extensions: bool = True) -> NodeService:
    service = NodeService(NodeConfig(listen=(host,), instances=(SALES,),
                                     extensions=extensions), network.reactor(host))
    service.privilegedStartService()
    service.startService()
    return service


def result(d: Deferred[Any], network: FakeNetwork, seconds: float = 5.0) -> Any:
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    for _ in range(int(seconds / 0.01)):
        if outcome:
            break
        network.clock.advance(0.01)
    assert outcome, "no result"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork(seed=7)


def resolver(network: FakeNetwork, **kw: Any) -> ClusterResolver:
    return ClusterResolver(network.reactor("127.0.0.100"), **kw)


def test_miss_then_hit(network: FakeNetwork) -> None:
    node(network, "127.0.0.1")
    client = resolver(network)
    first = result(client.resolve("127.0.0.1", "sales"), network)
    assert isinstance(first, Resolution)
    assert (first.extended, first.cached, first.source) == (True, False, "127.0.0.1")
    [candidate] = first.candidates
    assert (candidate.host, candidate.info.tcp) == ("127.0.0.1", 50101)
    assert client.sent == 1
    second = result(client.resolve("127.0.0.1", "SALES"), network)
    assert second.cached and second.candidates == first.candidates
    assert client.sent == 1, "a cache hit sends nothing"


def test_concurrent_resolves_share_one_request_per_address(network: FakeNetwork) -> None:
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    node(network, "127.0.0.1")
    client = resolver(network)
    waiting = [client.resolve("cluster", "SALES", addresses) for _ in range(1000)]
    answers = [result(d, network) for d in waiting]
    assert {a.candidates for a in answers} == {answers[0].candidates}
    assert client.sent == len(addresses)


def test_purge_and_expiry_ask_again(network: FakeNetwork) -> None:
    node(network, "127.0.0.1")
    client = resolver(network, ttl=10.0)
    result(client.resolve("127.0.0.1", "SALES"), network)
    client.purge("127.0.0.1", "sales")
    assert not result(client.resolve("127.0.0.1", "SALES"), network).cached
    assert client.sent == 2
    network.clock.advance(10.5)
    assert not result(client.resolve("127.0.0.1", "SALES"), network).cached
    assert client.sent == 3


def test_all_addresses_silent(network: FakeNetwork) -> None:
    client = resolver(network, timeout=2.0)
    with pytest.raises(ClusterSilent, match=r"127\.0\.0\.7, 127\.0\.0\.8\) port 1434 within 2 s"):
        result(client.resolve("c", "SALES", ["127.0.0.7", "127.0.0.8"]), network)
    # Extended to both at 0 s; both dialects to both at 0.05, 0.25, 0.65 and 1.45 s.
    assert client.sent == 2 + 4 * 4


def test_one_address_of_several_answers(network: FakeNetwork) -> None:
    node(network, "127.0.0.2")
    resolution = result(resolver(network).resolve(
        "c", "SALES", ["127.0.0.1", "127.0.0.2", "127.0.0.3"]), network)
    assert resolution.source == "127.0.0.2"
    assert resolution.candidates[0].host == "127.0.0.2"


def test_plain_mc_sqlr_server(network: FakeNetwork) -> None:
    node(network, "127.0.0.1", extensions=False)
    client = resolver(network)
    resolution = result(client.resolve("127.0.0.1", "SALES"), network)
    assert (resolution.extended, resolution.candidates[0].info.tcp) == (False, 50101)
    assert client.dialects["127.0.0.1"] == "plain"
    client.purge("127.0.0.1", "SALES")
    sent = client.sent
    result(client.resolve("127.0.0.1", "SALES"), network)
    assert client.sent == sent + 1, "a plain cluster is asked in plain only"


def test_unknown_instance_is_said_at_once(network: FakeNetwork) -> None:
    node(network, "127.0.0.1")
    start = network.clock.seconds()
    with pytest.raises(UnknownInstance, match="no live registration of NOPE"):
        result(resolver(network).resolve("127.0.0.1", "NOPE"), network)
    assert network.clock.seconds() - start < 0.1


class Garbage(DatagramProtocol):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(b"\x05\xff\xffnonsense", addr)  # type: ignore[union-attr]


def test_malformed_replies(network: FakeNetwork) -> None:
    network.reactor("127.0.0.1").listenUDP(1434, Garbage(), interface="127.0.0.1")
    with pytest.raises(MalformedReply, match="RESP_SIZE"):
        result(resolver(network, timeout=1.0).resolve("127.0.0.1", "SALES"), network)


def test_extended_reply_lists_primary_then_standbys_with_their_hosts() -> None:
    cluster = SimCluster(FakeNetwork(seed=3), sharedHost=False, size=3)
    cluster.startAll()
    cluster.run(2.0)
    client = ClusterResolver(cluster.network.reactor("10.0.0.100"),
                             key=b"0123456789abcdef0123456789abcdef", clusterName="sim")
    resolution = result(client.resolve("sim", "SHARED", list(cluster.addresses)),
                        cluster.network)
    assert [(c.host, c.priority, c.info.tcp) for c in resolution.candidates] == [
        ("10.0.0.1", 0, 30000), ("10.0.0.3", 2, 30002)]


def test_pending_resolves_are_bounded(network: FakeNetwork) -> None:
    client = resolver(network, maxPending=3)
    waiting = [client.resolve("c", f"I{n}", ["127.0.0.9"]) for n in range(3)]
    with pytest.raises(TooManyResolves, match="3 names are being resolved already"):
        result(client.resolve("c", "I9", ["127.0.0.9"]), network)
    assert client.resolve("c", "I0", ["127.0.0.9"]) is not None, "a shared name still joins"
    for d in waiting:
        with pytest.raises(ClusterSilent):
            result(d, network)


def test_extended_reply_puts_places_that_are_down_last() -> None:
    cluster = SimCluster(FakeNetwork(seed=3), sharedHost=False, size=3)
    cluster.startAll()
    cluster.run(2.0)
    primary = cluster.nodes[0].service
    primary.membership.updateOwn([evolve(r, down=r.name == "SHARED")
                                  for r in primary.membership.own])
    cluster.run(0.1)
    client = ClusterResolver(cluster.network.reactor("10.0.0.100"),
                             key=b"0123456789abcdef0123456789abcdef", clusterName="sim")
    resolution = result(client.resolve("sim", "SHARED", list(cluster.addresses)),
                        cluster.network)
    assert [(c.host, c.priority, c.down) for c in resolution.candidates] == [
        ("10.0.0.3", 2, False), ("10.0.0.1", 0, True)]
    answered = cluster.answered("SHARED")
    assert answered is not None and answered.info.tcp == 30002
