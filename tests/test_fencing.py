"""
Fencing a hung active on one host, on a L{FakeNetwork} whose processes can
be frozen (SIGSTOP) and thawed (SIGCONT): the passives hold duplicates of
the active's cluster socket, the one that takes over adopts them, and the
old active steps down as soon as it runs again.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol

from srp.authenticator import FRESHNESS
from srp.server.fencing import REMIND_FOR
from srp.testing import FakeNetwork
from srp.wire import InstanceRequest, InstancesResponse, decodeResponse
from tests.cluster_sim import INTERVAL, MISSES, SimCluster, SimNode, violations

#: The longest a takeover may take: misses unanswered KeepAlives, the tick
#: that notices, and the network's delays.
TAKEOVER = (MISSES + 1) * INTERVAL + 0.05


class Client(DatagramProtocol):
    """An [MC-SQLR] client on the fake network: the TCP port each answer gives."""

    def __init__(self) -> None:
        self.answers: list[int | None] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        response = decodeResponse(datagram)
        assert isinstance(response, InstancesResponse)
        self.answers.append(response.instances[0].tcp)


def ask(cluster: SimCluster, client: Client, name: str) -> int | None:
    """Ask the cluster address for C{name}; the TCP port answered within 0.1 s, or None."""
    before = len(client.answers)
    assert client.transport is not None
    client.transport.write(InstanceRequest(name).encode(), (cluster.addresses[0], 1434))
    cluster.run(0.1)
    return client.answers[before] if len(client.answers) > before else None


def settled(size: int = 3, sharedHost: bool = True, seed: int = 1) -> SimCluster:
    cluster = SimCluster(FakeNetwork(seed=seed), sharedHost=sharedHost, size=size)
    cluster.startAll()
    cluster.run(3.0)
    assert violations(cluster) == []
    return cluster


def clientOn(cluster: SimCluster) -> Client:
    client = Client()
    cluster.network.reactor("192.0.2.1").listenUDP(0, client)
    return client


def theActive(cluster: SimCluster) -> tuple[int, SimNode]:
    [active] = cluster.actives()
    return cluster.nodes.index(active), active


def test_every_passive_of_the_host_holds_the_active_socket() -> None:
    cluster = settled()
    _, active = theActive(cluster)
    for node in cluster.live():
        fence = node.service.membership.fence
        if node is active:
            assert fence.sockets == ()
        else:
            assert [(s.host, s.port) for s in fence.sockets] == [("127.0.0.1", 1434)]
            assert fence.origin is not None
            assert fence.origin.nodeId == active.service.membership.nodeId


def test_passives_on_other_hosts_hold_nothing() -> None:
    cluster = settled(sharedHost=False)
    for node in cluster.live():
        assert node.service.membership.fence.sockets == ()


def test_a_frozen_active_is_fenced_and_steps_down_when_thawed() -> None:
    cluster = settled()
    client = clientOn(cluster)
    index, old = theActive(cluster)
    assert ask(cluster, client, f"N{index}") == 20000 + index
    cluster.freeze(index)
    frozenAt = cluster.network.clock.seconds()
    while not cluster.actives():
        cluster.run(0.01)
        assert cluster.network.clock.seconds() - frozenAt < TAKEOVER
    _, new = theActive(cluster)
    assert new.service.membership.counters["fenced"] == 1
    assert new.service.membership.epoch == old.service.membership.epoch + 1
    other = next(i for i, n in enumerate(cluster.nodes) if n is not old)
    assert ask(cluster, client, f"N{other}") == 20000 + other
    cluster.run(2.0)
    cluster.thaw(index)
    cluster.run(0.01)
    assert old.service.role != "active"
    assert cluster.actives() == [new]
    cluster.run(2.0)
    assert violations(cluster) == []
    assert ask(cluster, client, f"N{index}") == 20000 + index


def test_an_active_frozen_for_long_asks_its_passives_when_thawed() -> None:
    cluster = settled()
    index, old = theActive(cluster)
    cluster.freeze(index)
    # Longer than the reminders last, and than what waits for it stays fresh.
    cluster.run(REMIND_FOR + FRESHNESS + 10.0, step=0.05)
    [new] = cluster.actives()
    cluster.thaw(index)
    cluster.run(INTERVAL)
    assert old.service.membership.counters["pauses"] == 1
    assert old.service.role != "active"
    assert cluster.actives() == [new]
    cluster.run(2.0)
    assert violations(cluster) == []


def test_a_thawed_active_answers_nobody_before_it_learns_it_was_replaced() -> None:
    """
    A continued process reads the datagrams that wait before it runs the
    timers that fell due: a request that waits in the shared cluster socket
    (the new active is busy) reaches the old active first, and gets no
    answer from what it knew before it stopped.  (Stopped for longer than
    the reminders last, so that none waits to tell it first.)
    """
    cluster = settled()
    client = clientOn(cluster)
    index, old = theActive(cluster)
    cluster.freeze(index)
    cluster.run(REMIND_FOR + FRESHNESS + 10.0, step=0.05)
    newIndex, new = theActive(cluster)
    assert newIndex != index
    cluster.freeze(newIndex)
    assert client.transport is not None
    client.transport.write(InstanceRequest(f"N{index}").encode(), (cluster.addresses[0], 1434))
    cluster.run(0.01)
    cluster.thaw(index)
    cluster.thaw(newIndex)
    cluster.run(0.5)
    assert client.answers == []
    assert old.service.membership.stats.held == 1
    assert old.service.membership.counters["pauses"] == 1
    assert cluster.actives() == [new]
    other = next(i for i in range(len(cluster.nodes)) if i not in (index, newIndex))
    assert ask(cluster, client, f"N{other}") == 20000 + other


def test_a_frozen_passive_follows_the_active_that_took_over_meanwhile() -> None:
    cluster = settled(size=4)
    index, _ = theActive(cluster)
    passive = (index + 1) % 4
    cluster.freeze(passive)
    cluster.run(0.5)
    cluster.freeze(index)
    cluster.run(3.0)
    cluster.thaw(passive)
    cluster.run(3.0)
    cluster.thaw(index)
    cluster.run(3.0)
    assert violations(cluster) == []


def test_a_dead_active_is_replaced_by_adopting_the_socket() -> None:
    cluster = settled()
    index, _ = theActive(cluster)
    cluster.crash(index)
    cluster.run(TAKEOVER)
    _, new = theActive(cluster)
    assert new.service.membership.counters["sockets_taken"] == 1
    cluster.run(2.0)
    assert violations(cluster) == []


def test_a_node_that_starts_later_holds_the_socket_too_and_finds_the_active() -> None:
    cluster = settled()
    index, _ = theActive(cluster)
    cluster.freeze(index)
    cluster.run(3.0)
    cluster.size = 4
    late = cluster.start(3)
    cluster.run(2.0)
    assert late.service.role == "passive"
    assert late.service.membership.fence.sockets
    cluster.thaw(index)
    cluster.run(2.0)
    assert violations(cluster) == []


def test_a_lost_keepalive_storm_does_not_leave_two_actives() -> None:
    # Heavy loss makes a passive take over from a live active: the two
    # read one socket until the lower one steps down.
    cluster = settled(size=4, seed=7)
    cluster.network.loss = 0.4
    cluster.run(20.0)
    cluster.network.loss = 0.0
    cluster.run(3.0)
    assert violations(cluster) == []
