"""
The cluster port where only the etcd leader answers (L{LeaderPort}), on a
L{FakeNetwork} whose processes can be frozen (SIGSTOP) and thawed
(SIGCONT): a leader that cannot bind tries again while it leads; the
followers of the leader's host hold duplicates of its sockets, and the one
elected next answers on them, so a stopped leader no longer gets the
datagrams; thawed, the old leader answers nothing and steps down.  Etcd's
part (the lease, the leader key and the watch) is given directly.
"""

from __future__ import annotations

import json

from twisted.internet.protocol import DatagramProtocol

from srp.etcd.client import Event, KeyValue
from srp.records import InstanceInfo, Registration
from srp.server.etcdlease import LEADER_FRACTION
from srp.server.etcdmember import EtcdMembership, EtcdSettings
from srp.server.membership import ClusterSettings
from srp.server.registry import Registry
from srp.server.responder import ResponderStats
from srp.testing import FakeHostReactor, FakeNetwork
from srp.wire import InstanceRequest
from tests.test_fencing import Client

HOST = "127.0.0.1"
TTL = 2
EVERY = TTL / 4
A, B = 0xA, 0xB


class NoEtcd:
    """An etcd client nothing here asks: the tests give etcd's part directly."""

    def __init__(self, reactor: FakeHostReactor) -> None:
        self.reactor = reactor


def ask(client: Client) -> None:
    """Ask the shared address for SALES."""
    assert client.transport is not None
    client.transport.write(InstanceRequest("SALES").encode(), (HOST, 1434))


def node(network: FakeNetwork, nodeId: int, listen: str = HOST) -> EtcdMembership:
    """A node of the cluster where only the leader answers; it registers SALES at port nodeId."""
    reactor = network.reactor(HOST)
    member = EtcdMembership(
        reactor, ClusterSettings(listen=(listen,), addresses=(), name="c"),
        EtcdSettings(("http://127.0.0.1:1",), leaseTTL=TTL, answer="leader"), Registry(),
        [Registration(InstanceInfo("HOST", "SALES", tcp=nodeId))], ResponderStats(),
        nodeId=nodeId, client=NoEtcd(reactor))  # type: ignore[arg-type]
    member.port.start()
    return member


def elect(member: EtcdMembership, token: int) -> None:
    """Etcd elects C{member}: its lease was renewed just now."""
    member.lease.validUntil = member.reactor.seconds() + TTL * LEADER_FRACTION
    member.lease._lead(token)


def run(network: FakeNetwork, seconds: float) -> None:
    """Let C{seconds} pass in steps of a millisecond, as datagrams take."""
    for _ in range(round(seconds * 1000)):
        network.clock.advance(0.001)


def renewed(network: FakeNetwork, member: EtcdMembership, seconds: float) -> None:
    """C{seconds} pass, C{member}'s lease renewed every quarter TTL."""
    for _ in range(round(seconds / EVERY)):
        member.lease._confirmed(network.clock.seconds())
        network.clock.advance(EVERY)


def leaderIs(member: EtcdMembership, leader: int, token: int, *at: tuple[int, str]) -> None:
    """The watch tells C{member} of the leader key, and of the nodes' addresses."""
    member._events([Event(KeyValue(member.keys.node(n), json.dumps(
        {"addresses": [address]}).encode())) for n, address in at]
        + [Event(KeyValue(member.keys.leader, b"%016x" % leader, createRevision=token))])


def held(member: EtcdMembership) -> list[tuple[str, int]]:
    """Where the duplicates C{member} holds are bound."""
    return [(s.host, s.port) for s in member.port.fence.sockets]


def clientOn(network: FakeNetwork) -> Client:
    client = Client()
    network.reactor("192.0.2.1").listenUDP(0, client)
    return client


def test_aLeaderRetriesTheBindWhileItLeads() -> None:
    """
    Elected while another program holds the port: the leader tries again
    every quarter TTL, counts and logs the failure once for the streak,
    and answers as soon as the port is free; it stops trying once it no
    longer leads.
    """
    network = FakeNetwork()
    squatter = network.reactor(HOST).listenUDP(1434, DatagramProtocol(), interface=HOST)
    leader = node(network, A)
    elect(leader, 7)
    assert leader.ports is None and leader.counters["bind_failed"] == 1
    renewed(network, leader, TTL * 2)
    assert leader.ports is None and leader.port.refused == 9
    assert leader.counters["bind_failed"] == 1
    squatter.stopListening()
    renewed(network, leader, EVERY)
    assert leader.ports is not None and leader.port.refused == 0
    client = clientOn(network)
    ask(client)
    run(network, 0.01)
    assert client.answers == [A]
    leader.lease._stepDown()
    assert leader.ports is None
    network.clock.advance(EVERY * 4)
    assert leader.ports is None


def test_aFollowerOfTheHostHoldsTheLeadersSockets() -> None:
    """
    A follower on the leader's address takes duplicates of its sockets,
    asking again when the leader had not offered them yet (etcd told the
    follower first); one on another address holds nothing.
    """
    network = FakeNetwork()
    leader, follower = node(network, A), node(network, B)
    far = node(network, 0xF, listen="127.0.0.9")
    for member in (follower, far):
        leaderIs(member, A, 7, (A, HOST), (B, HOST), (0xF, "127.0.0.9"))
    run(network, 0.01)
    assert held(follower) == [] and follower.port.following == A
    elect(leader, 7)
    run(network, EVERY + 0.01)
    assert held(follower) == [(HOST, 1434)]
    assert follower.counters["fence_taken"] == 1
    assert held(far) == [] and far.port.following == 0


def test_theNextLeaderAnswersOnTheHeldSocketsAndTheStoppedOneStepsDown() -> None:
    """
    The leader is stopped; its lease expires and the follower is elected:
    it answers on the duplicates it holds (the stopped leader still holds
    the port, so binding would fail), and gets every datagram.  Thawed, the
    old leader answers nothing from what it knew (its lease ran out by the
    clock), steps down at its deadline, and lets the port go.
    """
    network = FakeNetwork()
    old, new = node(network, A), node(network, B)
    elect(old, 7)
    leaderIs(new, A, 7, (A, HOST), (B, HOST))
    run(network, 0.01)
    assert held(new) == [(HOST, 1434)]
    client = clientOn(network)
    ask(client)
    run(network, 0.01)
    assert client.answers == [A]

    old.reactor.freeze()
    network.clock.advance(TTL)  # the lease expires: etcd deletes the leader key
    new._events([Event(KeyValue(new.keys.leader), deleted=True)])
    elect(new, 9)
    assert new.ports is not None
    assert new.counters["sockets_taken"] == 1 and new.counters["bind_failed"] == 0
    ask(client)
    run(network, 0.01)
    assert client.answers == [A, B]

    new.reactor.freeze()  # a request waits in the socket for whoever reads first
    ask(client)
    run(network, 0.01)
    old.reactor.thaw()
    new.reactor.thaw()
    run(network, 0.01)
    assert client.answers == [A, B]
    assert old.stats.held == 1
    assert old.role == "passive" and old.ports is None
    ask(client)
    run(network, 0.01)
    assert client.answers == [A, B, B]
    leaderIs(old, B, 9, (A, HOST), (B, HOST))
    run(network, 0.01)
    assert old.port.following == B and held(old) == [(HOST, 1434)]


def test_heldSocketsBoundElsewhereAreNotAdopted() -> None:
    """Duplicates that are not bound where this node listens are closed, and the port bound."""
    network = FakeNetwork()
    member = node(network, B)
    other = network.reactor(HOST).listenUDP(1434, DatagramProtocol(), interface="127.0.0.2")
    member.port.fence.sockets = (network.newDescriptor(other.socket),)
    elect(member, 9)
    assert member.ports is not None and member.counters["sockets_taken"] == 0
    assert [p.getHost().host for p in member.ports.ports] == [HOST]  # type: ignore[attr-defined]
    assert other.socket.held == 0
