"""
The roles of a node without an active to follow: probing for one, waiting
its turn to take over, and binding the cluster port to become the active.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.interfaces import SocketOffer
from srp.server.roles.base import Address, ClusterView, Role
from srp.wire.cluster import ActivateAck, Envelope, KeepAliveAck, Member

if TYPE_CHECKING:
    from srp.server.membership import Membership


class _Listening(Role):
    """A role that keeps what the cluster's KeepAliveAcks tell it."""

    def __init__(self, core: Membership, view: ClusterView) -> None:
        super().__init__(core)
        #: What this node last heard of its cluster.
        self.view = view

    @property
    def active(self) -> Member | None:
        """The active this node last heard from."""
        return self.view.active

    @property
    def passives(self) -> tuple[Member, ...]:
        """The passive list this node last heard."""
        return self.view.passives

    def received(self, envelope: Envelope, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """Take in what a KeepAliveAck tells, from any active."""
        if isinstance(envelope.message, KeepAliveAck):
            self.core.epoch = envelope.epoch
            self.view = self.view.heard(envelope.message, envelope.sender, source)
            self.heard()
        else:
            super().received(envelope, source, replyFrom)

    def heard(self) -> None:
        """An active answered: nothing more to do."""


class ProbingRole(_Listening):
    """
    Looking for the active: ask every cluster address.  An answer makes
    this node passive; none within two intervals makes it bind the cluster
    port (on one host the port is the mutex).
    """

    name = "probing"

    def probe(self) -> None:
        """Probe the cluster addresses, and give up after two intervals."""
        self.core.probe()
        self.core.schedule(2 * self.core.settings.interval,
                           lambda: self.core.machine.probeExpired(self.view))

    def heard(self) -> None:
        """An active answered: follow it."""
        self.core.machine.activeFound(self.view)


class WaitingRole(ProbingRole):
    """
    The active stopped answering: wait rank x interval (the first passive
    in the list takes over at once), then bind, or probe first when other
    passives were ahead in line.
    """

    name = "waiting"
    log = Logger()

    def rank(self) -> int:
        """This node's place in the passive list: its position in line to take over."""
        ids = [p.nodeId for p in self.view.passives]
        return ids.index(self.core.nodeId) if self.core.nodeId in ids else len(ids)

    def wait(self) -> None:
        """Start waiting for this node's turn."""
        rank = self.rank()
        self.core.counters["active_lost"] += 1
        active = self.view.active
        self.log.warn("Active {host}:{port} stopped answering; taking over at rank {rank}",
                      host=active.host if active else "?", port=active.port if active else 0,
                      rank=rank)
        self.core.schedule(rank * self.core.settings.interval, self._turn)

    def _turn(self) -> None:
        if self.rank() == 0:
            self.core.machine.probeExpired(self.view)
        else:
            self.probe()


class BindingRole(_Listening):
    """
    Binding the cluster port: after an unanswered probe, or taking the
    sockets the old active offers with an Activate.
    """

    name = "binding"
    log = Logger()

    def __init__(self, core: Membership, view: ClusterView,
                 activatedBy: Address | None = None, handover: str = "") -> None:
        super().__init__(core, view)
        #: The old active, when it handed over to this node.
        self.activatedBy = activatedBy
        #: The name under which the old active offers its cluster sockets.
        self.handover = handover

    def bind(self) -> None:
        """
        Try to bind the cluster port, and tell the role machine how it went;
        adopt the duplicates of the old active's sockets instead when this
        node holds them (the port is bound while anyone does).
        """
        if self.core.fence.sockets:
            self._fence()
            return
        try:
            ports = self.core.listen()
        except CannotListenError:
            if self.core.tally("bind_refused"):
                self.log.warn("Cannot bind the cluster port {port}, and no active answers "
                              "there ({count} times): {holder}",
                              port=self.core.settings.port,
                              count=self.core.counters["bind_refused"],
                              holder=self.core.mismatch.holder()
                              or "another program may hold it")
            self.core.machine.portRefused(self.view, self.core.settings.interval)
        else:
            self.core.machine.portBound(ports, self.view)

    def _fence(self) -> None:
        fence = self.core.fence
        origin = fence.origin
        ports = self.core.adopt(fence.surrender())
        if ports is None:
            self.bind()
            return
        if self.activatedBy is None and origin is not None:
            ports.fenced = origin
            self.core.counters["fenced"] += 1
            self.log.warn("Took over the cluster port that active {node:016x} still holds "
                          "(stopped, or gone): it no longer gets the cluster's datagrams",
                          node=origin.nodeId)
        self.core.machine.portBound(ports, self.view)

    def take(self) -> None:
        """Activated: take the old active's sockets if it offers them, else bind."""
        sharing = self.core.sharing
        if not self.handover or sharing is None:
            self.core.schedule(0, self.bind)
            return
        taken = sharing.take(self.handover, timeout=self.core.settings.interval)
        taken.addCallbacks(self._adopt, lambda failure: self.bind())

    def _adopt(self, offer: SocketOffer) -> None:
        ports = self.core.adopt(offer.sockets)
        if ports is None:
            self.bind()
        else:
            self.core.machine.portBound(ports, self.view)

    def acknowledge(self) -> None:
        """
        The node is active now: count how it became so (a hand-over taken,
        or a takeover from an active that stopped answering), and tell the
        old active, if it handed over, that the node took over.
        """
        if self.activatedBy is not None:
            self.core.counters["handovers_taken"] += 1
            self.core.send(ActivateAck(), self.activatedBy)
        elif self.view.active is not None:
            self.core.counters["takeovers"] += 1
