"""Registrations by command (leases) on a fake network: expiry, renewal, takeover."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectError
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.client.browser import NoAnswer
from srp.client.registration import Cluster, LeaseKeeper, Refused, request
from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo, Registration
from srp.server.leases import leaseId
from srp.testing import FakeNetwork
from srp.wire.cluster import (
    HEADER_SIZE,
    REGISTERED,
    ClusterWireError,
    Envelope,
    Register,
    RegisterAck,
    Unregister,
    clusterId,
    decodeEnvelope,
)
from tests.cluster_sim import INTERVAL, KEY, SimCluster

REGISTRANT = "127.0.0.1"


@implementer(IHealthCheck)
class PortCheck:
    """A health check that finds the ports in C{dead} down, and records where it looked."""

    name = "ports"

    def __init__(self) -> None:
        self.dead: set[int] = set()
        self.checked: set[tuple[str, int | None]] = set()

    def check(self, reactor: Any, host: str, info: InstanceInfo, timeout: float) -> None:
        self.checked.add((host, info.tcp))
        if info.tcp in self.dead:
            raise ConnectError(string=f"{host}:{info.tcp} refused")


def cluster(sharedHost: bool = True, size: int = 3, check: PortCheck | None = None
            ) -> SimCluster:
    nodes = SimCluster(FakeNetwork(), sharedHost=sharedHost, size=size)
    nodes.startAll()
    for node in nodes.nodes:
        node.service.membership.leases.check = check or PortCheck()
    nodes.run(2.0)
    return nodes


def where(nodes: SimCluster, key: bytes = KEY) -> Cluster:
    return Cluster(nodes.addresses[0], name="sim", key=key, timeout=0.5,
                   addresses=nodes.addresses)


def registration(port: int = 41433, priority: int = 0, name: str = "LEASED") -> Registration:
    return Registration(InstanceInfo("CONTAINER", name, tcp=port), priority=priority)


def outcome(nodes: SimCluster, coroutine: Any, seconds: float = 2.0) -> Any:
    """Run C{coroutine} on the simulation's clock; its result, or its failure."""
    results: list[Any] = []
    ensureDeferred(coroutine).addBoth(results.append)
    nodes.run(seconds)
    [result] = results
    return result


def register(nodes: SimCluster, ttl: float, port: int = 41433, priority: int = 0,
             key: bytes = KEY, seconds: float = 0.1) -> Any:
    client = nodes.network.reactor(REGISTRANT)
    return outcome(nodes, request(client, where(nodes, key),
                                  Register(registration(port, priority), round(ttl * 1000))),
                   seconds)


def answered(nodes: SimCluster, name: str = "LEASED") -> int | None:
    found = nodes.answered(name)
    return None if found is None else found.info.tcp


def test_lease_is_answered_until_its_ttl_ends_exactly() -> None:
    nodes = cluster()
    start = nodes.network.clock.seconds()
    ack = register(nodes, ttl=3.0)
    assert isinstance(ack, RegisterAck) and ack.result == REGISTERED and ack.ttl == 3000
    assert answered(nodes) == 41433
    [active] = nodes.actives()
    [lease] = active.service.membership.leases.leases()
    assert lease.registration.nodeId == leaseId("leased", 0)
    granted = lease.expires
    assert granted is not None and start < granted <= start + 3.0 + 0.1
    nodes.run(granted - nodes.network.clock.seconds() - 0.001, step=0.0005)
    assert answered(nodes) == 41433
    nodes.run(0.002, step=0.001)
    assert answered(nodes) is None
    assert active.service.membership.counters["leases_expired"] == 1


def test_renewal_extends_the_lease_and_keeps_one_registration() -> None:
    nodes = cluster()
    register(nodes, ttl=1.0)
    nodes.run(0.8)
    register(nodes, ttl=1.0)
    nodes.run(0.8)
    assert answered(nodes) == 41433, "renewed before it ended"
    [active] = nodes.actives()
    assert len(active.service.registry.candidates("LEASED")) == 1
    assert active.service.membership.counters["lease_renewals"] == 1
    nodes.run(0.3)
    assert answered(nodes) is None


def test_registering_again_on_a_new_port_moves_the_instance() -> None:
    nodes = cluster()
    register(nodes, ttl=10.0, port=41433)
    register(nodes, ttl=10.0, port=41500)
    assert answered(nodes) == 41500
    [active] = nodes.actives()
    assert [r.info.tcp for r in active.service.registry.candidates("leased")] == [41500]


def test_unregister_removes_at_once_and_on_every_passive() -> None:
    nodes = cluster()
    register(nodes, ttl=0)
    client = nodes.network.reactor(REGISTRANT)
    ack = outcome(nodes, request(client, where(nodes), Unregister("leased", 0)), 0.1)
    assert isinstance(ack, RegisterAck) and ack.result == REGISTERED
    assert answered(nodes) is None
    assert [len(n.service.membership.leases) for n in nodes.live()] == [0, 0, 0]
    again = outcome(nodes, request(client, where(nodes), Unregister("leased", 0)), 0.1)
    assert isinstance(again, Failure) and again.check(Refused)
    assert "leased at priority 0 is not registered by command" in str(again.value)


def test_ttl_zero_lasts_until_unregistered() -> None:
    nodes = cluster()
    register(nodes, ttl=0)
    nodes.run(120.0, step=0.05)
    assert answered(nodes) == 41433


def test_a_lease_is_just_another_candidate_by_priority() -> None:
    nodes = cluster()
    register(nodes, ttl=10.0, port=41433, priority=5)
    register(nodes, ttl=10.0, port=41434, priority=1)
    [active] = nodes.actives()
    assert [r.info.tcp for r in active.service.registry.candidates("leased")] == [41434, 41433]
    assert answered(nodes) == 41434


@pytest.mark.parametrize("sharedHost", [True, False])
def test_a_lease_survives_a_crash_of_the_active_and_still_expires(sharedHost: bool) -> None:
    nodes = cluster(sharedHost)
    ack = register(nodes, ttl=4.0)
    assert ack.result == REGISTERED
    [old] = nodes.actives()
    [granted] = old.service.membership.leases.leases()
    assert granted.expires is not None
    nodes.crash(nodes.nodes.index(old))
    died = nodes.network.clock.seconds()
    while not nodes.actives():
        nodes.run(0.01)
    [new] = nodes.actives()
    assert new is not old
    assert nodes.network.clock.seconds() - died < 1.5
    assert answered(nodes) == 41433, "the new active answers the lease at once"
    [kept] = new.service.membership.leases.leases()
    assert kept.expires is not None and abs(kept.expires - granted.expires) < 0.05
    nodes.run(granted.expires - nodes.network.clock.seconds() - 0.05)
    assert answered(nodes) == 41433
    nodes.run(0.1)
    assert answered(nodes) is None


def test_a_lease_survives_a_graceful_hand_over() -> None:
    nodes = cluster()
    register(nodes, ttl=0)
    [old] = nodes.actives()
    nodes.stop(nodes.nodes.index(old))
    nodes.run(0.5)
    assert answered(nodes) == 41433


def test_a_node_that_joins_later_gets_the_table() -> None:
    nodes = SimCluster(FakeNetwork(), size=3)
    nodes.start(0)
    nodes.start(1)
    nodes.run(2.0)
    register(nodes, ttl=10.0)
    late = nodes.start(2)
    nodes.run(1.0)
    [lease] = late.service.membership.leases.leases()
    assert lease.registration.info.tcp == 41433
    for index in (0, 1):
        nodes.crash(index)
    nodes.run(2.0)
    assert nodes.actives() == [late]
    assert answered(nodes) == 41433


def test_a_passive_redirects_a_registrant_to_the_active() -> None:
    nodes = cluster(sharedHost=False)
    [active] = nodes.actives()
    passive = next(n for n in nodes.live() if n is not active)
    member = passive.service.membership
    client = nodes.network.reactor(REGISTRANT)
    assert member.socket is not None and member.socket.transport is not None
    port = member.socket.transport.getHost().port
    target = Cluster(passive.host, port=port, name="sim", key=KEY, timeout=0.5)
    ack = outcome(nodes, request(client, target, Register(registration(), 5000)), 0.1)
    assert isinstance(ack, RegisterAck) and ack.result == REGISTERED
    assert member.counters["leases_redirected"] == 1
    assert answered(nodes) == 41433


def test_wrong_key_gets_no_answer() -> None:
    nodes = cluster()
    failure = register(nodes, ttl=5.0, key=b"another key of 32 bytes........!", seconds=0.6)
    assert isinstance(failure, Failure) and failure.check(NoAnswer)
    assert answered(nodes) is None
    [active] = nodes.actives()
    assert active.service.membership.auth.rejected["tag"] >= 1


def test_the_lease_table_is_capped_counted_and_logged() -> None:
    nodes = cluster()
    for node in nodes.live():
        node.service.membership.leases.limit = 2
    assert register(nodes, ttl=5.0, priority=0).result == REGISTERED
    assert register(nodes, ttl=5.0, priority=1).result == REGISTERED
    refused = register(nodes, ttl=5.0, priority=2)
    assert isinstance(refused, Failure) and refused.check(Refused)
    assert "the cluster holds 2 registrations by command" in str(refused.value)
    assert register(nodes, ttl=5.0, priority=1).result == REGISTERED, "a renewal is not new"
    [active] = nodes.actives()
    assert active.service.membership.counters["leases_refused"] == 1


def test_keeper_renews_every_third_and_unregisters_on_stop() -> None:
    nodes = cluster()
    keeper = LeaseKeeper(nodes.network.reactor(REGISTRANT), where(nodes), registration(),
                         ttl=1.5)
    assert outcome(nodes, keeper.start(), 0.1).result == REGISTERED
    nodes.run(10.0)
    assert answered(nodes) == 41433
    assert keeper.renewals == 20  # every 0.5 s for 10 s
    done: Deferred[None] = ensureDeferred(keeper.stop())
    nodes.run(0.1)
    assert done.called
    assert answered(nodes) is None
    nodes.run(5 * INTERVAL)
    assert all(len(n.service.membership.leases) == 0 for n in nodes.live())


@pytest.mark.parametrize("sharedHost", [True, False])
def test_the_active_checks_leases_and_answers_the_live_one(sharedHost: bool) -> None:
    check = PortCheck()
    nodes = cluster(sharedHost, check=check)
    register(nodes, ttl=0, port=41433, priority=0)
    register(nodes, ttl=0, port=41434, priority=1)
    nodes.run(1.0)
    assert answered(nodes) == 41433
    [active] = nodes.actives()
    assert (active.host, 41433) in check.checked, "checked at the active's address"
    check.dead.add(41433)
    nodes.run(3 * INTERVAL + 0.01)
    assert answered(nodes) == 41434
    assert [r.down for r in active.service.registry.candidates("LEASED")] == [True, False]
    register(nodes, ttl=0, port=41433, priority=0)
    assert answered(nodes) == 41434, "a renewal does not make a dead server live"
    nodes.crash(nodes.nodes.index(active))
    nodes.run(2.0)
    assert answered(nodes) == 41434, "the new active checks them too"
    check.dead.clear()
    nodes.run(3 * INTERVAL)
    assert answered(nodes) == 41433


def test_a_passive_ignores_lease_messages_that_arrive_out_of_order() -> None:
    nodes = cluster()
    [active] = nodes.actives()
    passive = next(n for n in nodes.live() if n is not active).service.membership
    leases = passive.leases
    leases.follow(Unregister("other", 0), sequence=20)
    leases.follow(Register(registration(name="OTHER"), 0), sequence=10)
    assert len(leases) == 0, "the Register was sent before the Unregister"
    assert passive.counters["lease_messages_reordered"] == 1
    leases.follow(Register(registration(name="OTHER"), 0), sequence=30)
    assert [lease.registration.nodeId for lease in leases.leases()] == [leaseId("other", 0)]


def test_the_active_tells_every_change_again_at_the_next_ticks() -> None:
    nodes = cluster(sharedHost=False, size=2)
    [active] = nodes.actives()
    [passive] = [n for n in nodes.live() if n is not active]
    register(nodes, ttl=0)
    assert len(passive.service.membership.leases) == 1
    # The Unregister the active forwards first is lost; the repeats still end the lease.
    nodes.network.partition([active.host], [passive.host])
    client = nodes.network.reactor(REGISTRANT)
    done = ensureDeferred(request(client, where(nodes), Unregister("leased", 0)))
    nodes.run(0.02, step=0.005)
    assert done.called
    nodes.network.heal()
    assert len(passive.service.membership.leases) == 1
    nodes.run(INTERVAL)
    assert len(passive.service.membership.leases) == 0


def test_a_lease_message_with_an_unknown_action_is_malformed() -> None:
    body = struct.pack("<BBHIQIQH", Register.opcode, 1, 0, clusterId("c"), 1, 1, 1, 1) + b"\x03"
    with pytest.raises(ClusterWireError, match="unknown lease action 3") as caught:
        decodeEnvelope(body + hmac.digest(KEY, body, hashlib.sha256), KEY, clusterId("c"))
    assert caught.value.reason == "malformed"


def test_register_round_trips_with_its_action_byte() -> None:
    message = Register(registration(), 1500, "10.0.0.7")
    datagram = Envelope(message, clusterId("c"), 1, 0, 1).encode(KEY)
    assert datagram[HEADER_SIZE] == 1
    assert decodeEnvelope(datagram, KEY, clusterId("c")).message == message
    unregister = Envelope(Unregister("LEASED", 3), clusterId("c"), 1, 0, 1).encode(KEY)
    assert unregister[0] == Register.opcode and unregister[HEADER_SIZE] == 2


def test_keeper_never_turns_a_short_lease_into_an_endless_one() -> None:
    keeper = LeaseKeeper(None, Cluster("127.0.0.1"), registration(), ttl=0.0001)
    assert keeper.message().ttl == 1
    assert LeaseKeeper(None, Cluster("127.0.0.1"), registration(), ttl=0).message().ttl == 0


def test_status_shows_a_lease_and_the_time_it_has_left() -> None:
    nodes = cluster()
    register(nodes, ttl=3.0)
    nodes.run(1.0)
    [active] = nodes.actives()
    [leased] = [r for r in active.service.membership.status()["registrations"]
                if r["instance"] == "LEASED"]
    assert leased["by_command"] is True
    assert leased["node"] == f"{leaseId('LEASED', 0):016x}"
    assert 1.8 < leased["lease"] < 2.0
    assert leased["since"] is not None, "the active checks it"
    own = [r for r in active.service.membership.status()["registrations"]
           if r["instance"] != "LEASED"]
    assert own and all("by_command" not in r for r in own)
