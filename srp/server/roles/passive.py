"""The passive: it follows the active and takes over when the active is gone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from attrs import evolve
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.server.roles.base import Address, ClusterView, Role
from srp.wire.cluster import (
    MAX_COUNT,
    NO_LIST_VERSION,
    Activate,
    Envelope,
    Join,
    KeepAlive,
    KeepAliveAck,
    Leave,
    Member,
    Redirect,
    Register,
    ReJoin,
    Unregister,
)
from srp.wire.errors import WireError

if TYPE_CHECKING:
    from srp.server.membership import Membership


#: Ticks after a change of the node's registrations that send the Join again.
REPEATED_JOINS = 2

class PassiveRole(Role):
    """
    A passive: Join the active with this node's registrations, send it a
    KeepAlive every interval, and presume it dead after C{misses}
    unanswered ones.  Its KeepAliveAcks carry the passive list (so this
    node knows its rank); it may ask for a re-Join, redirect this node to
    another active, or Activate it on a graceful stop.
    """

    name = "passive"
    log = Logger()

    def __init__(self, core: Membership, view: ClusterView) -> None:
        if view.active is None:
            raise ValueError("a passive follows an active")
        super().__init__(core)
        #: What the active last told: who it is, the passive list and its version.
        self.view = view
        #: KeepAlives sent since the active last answered.
        self.unanswered = 0
        #: Ticks that still send a Join after the node's registrations changed.
        self._joinsToRepeat = 0

    @property
    def active(self) -> Member:
        """The active this passive follows."""
        assert self.view.active is not None
        return self.view.active

    @property
    def passives(self) -> tuple[Member, ...]:
        """The passive list, as the active last sent it."""
        return self.view.passives

    @property
    def _address(self) -> Address:
        return self.active.host, self.active.port

    def begin(self) -> None:
        """Now passive: forget the registry (the active answers), Join the active."""
        self.core.clearRegistry()
        # The active sends its whole lease table once it has this node's Join.
        self.core.leases.clear()
        self.core.fence.follow(self.active.nodeId)
        self.join()
        self.log.info("Passive in cluster {cluster}, active {host}:{port} at epoch {epoch}",
                      cluster=self.core.settings.name, host=self.active.host,
                      port=self.active.port, epoch=self.core.epoch)

    def join(self) -> None:
        """Send Join with this node's registrations to the active (its first window of parts)."""
        self.core.counters["joins_sent"] += 1
        self._send(self.core.joinParts.first)

    def _send(self, joins: Callable[[], Sequence[Join]]) -> None:
        try:
            parts = joins()
        except WireError as e:
            self.core.counters["unsent"] += 1
            self.log.warn("Cannot Join: {error}", error=e)
            return
        for join in parts:
            self.core.send(join, self._address)

    def ownChanged(self) -> None:
        """
        Join again now, and at the next L{REPEATED_JOINS} ticks: a Join lost
        on the way would leave the active with the old registrations (a
        change of health keeps their count, which KeepAlive checks).
        """
        self.join()
        self._joinsToRepeat = REPEATED_JOINS

    def leave(self) -> None:
        """Tell the active this passive is going."""
        self.core.send(Leave(), self._address)

    def tick(self) -> None:
        """Send a KeepAlive, or report the active lost after C{misses} unanswered ones."""
        if self.unanswered >= self.core.settings.misses:
            self.core.machine.activeLost(self.view)
            return
        self.unanswered += 1
        count = min(len(self.core.own), MAX_COUNT)
        self.core.send(KeepAlive(count, self.view.listVersion, self.core.joinParts.digest),
                       self._address)
        if self._joinsToRepeat:
            self._joinsToRepeat -= 1
            self.join()

    def received(self, envelope: Envelope, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """Follow the active's answers; take ReJoin, Redirect and Activate from it only."""
        fromActive = envelope.sender == self.active.nodeId
        match envelope.message:
            case KeepAliveAck() as ack:
                self._acknowledged(ack, envelope, source)
            case ReJoin(generation=0) if fromActive:
                self.core.counters["rejoins"] += 1
                self.join()
            case ReJoin() as rejoin if fromActive:
                # The active is receiving this node's Join in parts: it is alive.
                self.unanswered = 0
                self.core.counters["parts_resent"] += 1
                self._send(lambda: self.core.joinParts.asked(rejoin))
            case ReJoin() if self.unanswered and envelope.epoch > self.core.epoch:
                self._tookOver(envelope.sender, source)
            case Redirect(active=active) if fromActive:
                self.core.counters["redirected"] += 1
                self.view = evolve(self.view, active=active)
                self.unanswered = 0
                self.join()
            case Activate() as activate if fromActive:
                self._activated(activate, source)
            case Register() | Unregister() as lease if fromActive:
                self.core.leases.follow(lease, envelope.sequence)
            case Register() | Unregister():
                # A registrant asked a passive: the active grants leases.
                self.core.counters["leases_redirected"] += 1
                self.core.send(Redirect(self.active), source, replyFrom)
            case _:
                super().received(envelope, source, replyFrom)

    def _acknowledged(self, ack: KeepAliveAck, envelope: Envelope, source: Address) -> None:
        # Follow the active with the highest epoch (then node id) known.
        if (envelope.epoch, envelope.sender) < (self.core.epoch, self.active.nodeId):
            self.core.counters["stale_epoch"] += 1
            return
        followingAnother = envelope.sender != self.active.nodeId
        self.core.epoch = envelope.epoch
        self.view = self.view.heard(ack, envelope.sender, source)
        self.unanswered = 0
        self.core.fence.follow(envelope.sender)
        if followingAnother:
            self.join()

    def _tookOver(self, sender: int, source: Address) -> None:
        """
        The active stopped answering, and a node of a later epoch asks this
        one to join: it took over while this node did not run.  Follow it.
        """
        self.core.counters["followed_rejoin"] += 1
        self.view = evolve(self.view, active=Member(sender, source[0], source[1]),
                           listVersion=NO_LIST_VERSION)
        self.unanswered = 0
        self.core.fence.follow(sender)
        self.join()

    def _activated(self, activate: Activate, source: Address) -> None:
        self.core.counters["activated"] += 1
        others = tuple(p for p in activate.passives if p.nodeId != self.core.nodeId)
        ages = {p.nodeId: age / 1000
                for p, age in zip(activate.passives, activate.ages, strict=True)}
        known = {p.nodeId for p in others}
        for registration in activate.registrations:
            if registration.nodeId in known:
                self.core.registry.register(registration)
        self.core.machine.activated(evolve(self.view, passives=others, ages=ages), source,
                                    activate.handover)
