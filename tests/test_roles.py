"""
The cluster roles one at a time: each implements L{IClusterRole}, and each
one's behaviour, on a L{Clock}, with the machine inputs it gives recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from attrs import evolve
from twisted.internet.protocol import DatagramProtocol
from zope.interface.verify import verifyObject

from srp.interfaces import IClusterRole
from srp.records import InstanceInfo, Registration
from srp.server.membership import ClusterSettings, Membership
from srp.server.registry import Registry
from srp.server.responder import ResponderStats
from srp.server.roles.active import ActiveRole, ClusterPorts
from srp.server.roles.base import ClusterView, CrashedRole, IdleRole, Role, StoppedRole
from srp.server.roles.handingover import HandingOverRole
from srp.server.roles.machine import RoleInputs
from srp.server.roles.passive import PassiveRole
from srp.server.roles.seeking import BindingRole, ProbingRole, WaitingRole
from srp.testing import FakeNetwork
from srp.wire.cluster import (
    NO_LIST_VERSION,
    Activate,
    ActivateAck,
    ClusterMessage,
    Envelope,
    Join,
    KeepAlive,
    KeepAliveAck,
    Member,
    Redirect,
    ReJoin,
    clusterId,
    registrationsDigest,
)

HOST = "10.0.0.1"
INTERVAL = 0.25
MISSES = 3
ACTIVE = Member(2, "10.0.0.2", 1434)
OTHER = Member(3, "10.0.0.3", 40000)
SELF = Member(1, HOST, 40001)
OWN = (Registration(InstanceInfo("H1", "N1", tcp=1001)),)

Sent = list[tuple[ClusterMessage, tuple[str, int]]]


class Inputs:
    """Records the inputs a role gives its machine, instead of a machine."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.calls.append((name, args))


class Core:
    """A membership core on a fake network, its machine a recorder, its sends recorded."""

    def __init__(self) -> None:
        self.network = FakeNetwork()
        self.clock = self.network.clock
        self.membership = Membership(
            self.network.reactor(HOST),
            ClusterSettings(listen=(HOST,), addresses=(HOST, ACTIVE.host), interval=INTERVAL,
                            misses=MISSES),
            Registry(), OWN, ResponderStats(), nodeId=SELF.nodeId)
        self.inputs = Inputs()
        self.membership.machine = cast(RoleInputs, self.inputs)
        self.sent: Sent = []

        def send(message: ClusterMessage, to: tuple[str, int],
                 sender: DatagramProtocol | None = None) -> None:
            self.sent.append((message, to))

        self.membership.send = send  # type: ignore[method-assign]

    def envelope(self, message: ClusterMessage, sender: int, epoch: int = 1) -> Envelope:
        return Envelope(message, clusterId("srp"), sender, epoch, sequence=1)


def ports() -> ClusterPorts:
    return ClusterPorts([], [])


ROLES: list[Callable[[Membership], Role]] = [
    IdleRole, StoppedRole, CrashedRole,
    lambda core: ProbingRole(core, ClusterView()),
    lambda core: WaitingRole(core, ClusterView()),
    lambda core: BindingRole(core, ClusterView()),
    lambda core: PassiveRole(core, ClusterView(ACTIVE)),
    lambda core: ActiveRole(core, ports(), ClusterView()),
    lambda core: HandingOverRole(core, ActiveRole(core, ports(), ClusterView())),
]


@pytest.mark.parametrize("build", ROLES)
def test_every_role_provides_IClusterRole(build: Callable[[Membership], Role]) -> None:
    role = build(Core().membership)
    assert verifyObject(IClusterRole, role)
    assert role.name in {"idle", "stopped", "crashed", "probing", "waiting", "binding",
                         "passive", "active", "handing-over"}


def test_passive_reports_the_active_lost_after_misses_unanswered_keepalives() -> None:
    core = Core()
    passive = PassiveRole(core.membership, ClusterView(ACTIVE, listVersion=7))
    for _ in range(MISSES):
        core.clock.advance(INTERVAL)
        passive.tick()
    digest = registrationsDigest(core.membership.own)
    assert core.sent == [(KeepAlive(1, 7, digest), (ACTIVE.host, ACTIVE.port))] * MISSES
    assert passive.unanswered == MISSES
    assert core.inputs.calls == []
    passive.tick()
    assert core.inputs.calls == [("activeLost", (passive.view,))]
    assert len(core.sent) == MISSES


def test_an_ack_from_the_active_resets_unanswered_and_brings_the_list() -> None:
    core = Core()
    passive = PassiveRole(core.membership, ClusterView(ACTIVE))
    passive.tick()
    passive.tick()
    ack = KeepAliveAck((SELF, OTHER), listVersion=5)
    passive.received(core.envelope(ack, ACTIVE.nodeId, epoch=4), (ACTIVE.host, ACTIVE.port),
                     DatagramProtocol())
    assert passive.unanswered == 0
    assert passive.view.passives == (SELF, OTHER)
    assert passive.view.listVersion == 5
    assert core.membership.epoch == 4


def test_an_ack_from_an_older_epoch_is_stale() -> None:
    core = Core()
    core.membership.epoch = 5
    passive = PassiveRole(core.membership, ClusterView(ACTIVE))
    passive.tick()
    passive.received(core.envelope(KeepAliveAck((OTHER,)), OTHER.nodeId, epoch=4),
                     (OTHER.host, OTHER.port), DatagramProtocol())
    assert core.membership.counters["stale_epoch"] == 1
    assert passive.active == ACTIVE
    assert passive.unanswered == 1


def test_passive_takes_rejoin_redirect_and_activate_from_its_active_only() -> None:
    core = Core()
    passive = PassiveRole(core.membership, ClusterView(ACTIVE))
    source = (OTHER.host, OTHER.port)
    for message in (ReJoin(), Redirect(OTHER), Activate((SELF,), (), (0,))):
        passive.received(core.envelope(message, OTHER.nodeId), source, DatagramProtocol())
    assert core.sent == []
    assert core.inputs.calls == []
    assert passive.active == ACTIVE
    assert core.membership.counters["activate_refused"] == 1


def test_redirect_makes_the_passive_join_the_named_active() -> None:
    core = Core()
    passive = PassiveRole(core.membership, ClusterView(ACTIVE))
    passive.tick()
    passive.received(core.envelope(Redirect(OTHER), ACTIVE.nodeId),
                     (ACTIVE.host, ACTIVE.port), DatagramProtocol())
    assert passive.active == OTHER
    assert passive.unanswered == 0
    assert core.sent[-1] == (Join(core.membership.own), (OTHER.host, OTHER.port))


def test_activate_registers_the_passives_and_asks_to_take_over() -> None:
    core = Core()
    passive = PassiveRole(core.membership, ClusterView(ACTIVE, (SELF, OTHER), listVersion=9))
    theirs = Registration(InstanceInfo("H3", "N3", tcp=1003), nodeId=OTHER.nodeId)
    stranger = Registration(InstanceInfo("H9", "N9", tcp=1009), nodeId=99)
    activate = Activate((SELF, OTHER), (theirs, stranger), (250, 500), "offer")
    passive.received(core.envelope(activate, ACTIVE.nodeId), (ACTIVE.host, ACTIVE.port),
                     DatagramProtocol())
    assert list(core.membership.registry.registrations()) == [theirs]
    view = ClusterView(ACTIVE, (OTHER,), 9, {SELF.nodeId: 0.25, OTHER.nodeId: 0.5})
    assert core.inputs.calls == [("activated", (view, (ACTIVE.host, ACTIVE.port), "offer"))]


def test_waiting_waits_its_rank_then_binds() -> None:
    core = Core()
    waiting = WaitingRole(core.membership, ClusterView(ACTIVE, (OTHER, SELF)))
    assert waiting.rank() == 1
    waiting.wait()
    core.clock.advance(INTERVAL)
    # Another passive was ahead in line: probe first.
    assert core.inputs.calls == []
    assert core.membership.counters["probes"] == 1
    core.clock.advance(2 * INTERVAL)
    assert core.inputs.calls == [("probeExpired", (waiting.view,))]
    assert core.membership.counters["active_lost"] == 1


def test_probing_follows_the_first_active_that_answers() -> None:
    core = Core()
    probing = ProbingRole(core.membership, ClusterView(OTHER, (OTHER,), listVersion=3))
    probing.received(core.envelope(KeepAliveAck(()), ACTIVE.nodeId, epoch=2),
                     (ACTIVE.host, ACTIVE.port), DatagramProtocol())
    # A different active: the old list's version no longer holds.
    view = ClusterView(ACTIVE, (OTHER,), NO_LIST_VERSION)
    assert core.inputs.calls == [("activeFound", (view,))]
    assert core.membership.epoch == 2


def test_active_expires_a_silent_passive() -> None:
    core = Core()
    active = ActiveRole(core.membership, ports(), ClusterView())
    mine = Registration(InstanceInfo("H3", "N3", tcp=1003), nodeId=OTHER.nodeId)
    active.received(core.envelope(Join((mine,)), OTHER.nodeId), (OTHER.host, OTHER.port),
                    DatagramProtocol())
    assert active.passives == [OTHER]
    assert list(core.membership.registry.registrations()) == [mine]
    version = active.listVersion
    core.clock.advance((MISSES + 1) * INTERVAL)
    active.tick()
    assert active.passives == [OTHER]
    core.clock.advance(INTERVAL / 10)
    active.tick()
    assert active.passives == []
    assert list(core.membership.registry.registrations()) == []
    assert active.listVersion == version + 1
    assert core.membership.counters["expired"] == 1


def test_active_asks_an_unknown_passive_to_rejoin() -> None:
    core = Core()
    active = ActiveRole(core.membership, ports(), ClusterView())
    active.received(core.envelope(KeepAlive(1, 0), OTHER.nodeId), (OTHER.host, OTHER.port),
                    DatagramProtocol())
    assert core.sent == [(ReJoin(), (OTHER.host, OTHER.port))]
    assert core.membership.counters["rejoins_asked"] == 1


def test_active_asks_a_rejoin_when_the_digest_shows_a_lost_join() -> None:
    """A change of health keeps the count: only the digest shows the Join that was lost."""
    core = Core()
    active = ActiveRole(core.membership, ports(), ClusterView())
    source = (OTHER.host, OTHER.port)
    mine = Registration(InstanceInfo("H3", "N3", tcp=1003), nodeId=OTHER.nodeId)
    active.received(core.envelope(Join((mine,)), OTHER.nodeId), source, DatagramProtocol())
    core.sent.clear()
    listVersion = active.listVersion
    for digest in (0, registrationsDigest((mine,))):  # version 1, then the same digest
        active.received(core.envelope(KeepAlive(1, listVersion, digest), OTHER.nodeId),
                        source, DatagramProtocol())
    assert [type(m) for m, _ in core.sent] == [KeepAliveAck, KeepAliveAck]
    core.sent.clear()
    down = registrationsDigest((evolve(mine, down=True),))
    active.received(core.envelope(KeepAlive(1, listVersion, down), OTHER.nodeId), source,
                    DatagramProtocol())
    assert core.sent == [(ReJoin(), source)]
    assert core.membership.counters["rejoins_asked"] == 1


def test_active_steps_down_for_a_higher_epoch() -> None:
    core = Core()
    active = ActiveRole(core.membership, ports(), ClusterView(None, (OTHER,)))
    core.membership.epoch = 3
    active.received(core.envelope(KeepAliveAck(()), ACTIVE.nodeId, epoch=4),
                    (ACTIVE.host, ACTIVE.port), DatagramProtocol())
    assert core.sent == [(Redirect(Member(ACTIVE.nodeId, ACTIVE.host, ACTIVE.port)),
                          (OTHER.host, OTHER.port))]
    assert core.inputs.calls == [("outranked", (ClusterView(None, (OTHER,),
                                                            active.listVersion),))]
    assert core.membership.epoch == 4


def test_machine_holds_the_role_and_halting_is_an_input() -> None:
    network = FakeNetwork()
    membership = Membership(network.reactor(HOST), ClusterSettings(listen=(HOST,),
                                                                    addresses=(HOST,)),
                            Registry(), OWN, ResponderStats(), nodeId=1)
    assert membership.role == "idle"
    membership.machine.start()
    assert isinstance(membership.current, ProbingRole)
    network.clock.advance(1.0)
    role = membership.current
    assert isinstance(role, ActiveRole)
    assert membership.role == "active"
    assert role.ports.ports and (HOST, 1434) in network._ports
    membership.halt()
    assert membership.role == "crashed"
    assert (HOST, 1434) not in network._ports
    assert role.ports.ports == []
    assert membership.machine.stop().called


def test_handing_over_activates_the_passives_in_turn_then_stops() -> None:
    core = Core()
    active = ActiveRole(core.membership, ports(), ClusterView())
    for member in (OTHER, ACTIVE):
        active.received(core.envelope(Join(()), member.nodeId), (member.host, member.port),
                        DatagramProtocol())
    core.sent.clear()
    handingOver = HandingOverRole(core.membership, active)
    handingOver.begin()
    assert [(type(m), to) for m, to in core.sent] == [(Activate, (OTHER.host, OTHER.port))]
    first = core.sent[0][0]
    assert isinstance(first, Activate) and first.passives == (ACTIVE,)
    core.clock.advance(MISSES * INTERVAL)
    assert core.sent[-1][1] == (ACTIVE.host, ACTIVE.port)
    assert core.membership.counters["activates_sent"] == 2
    assert core.inputs.calls == []
    handingOver.received(core.envelope(ActivateAck(), ACTIVE.nodeId),
                         (ACTIVE.host, ACTIVE.port), DatagramProtocol())
    assert core.inputs.calls == [("stopped", ())]
    assert core.membership.counters["handed_over"] == 1
