"""The active stopping gracefully: the hand-over in progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import evolve
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.records import Registration
from srp.server.roles.active import ActiveRole
from srp.server.roles.base import Address, Role
from srp.wire.cluster import MAX_PAYLOAD, Activate, ActivateAck, Envelope, Member, registrationSize

if TYPE_CHECKING:
    from srp.server.membership import Membership


class HandingOverRole(Role):
    """
    Activate the first passive that answers, with the passive list and the
    registry, then stop.

    On a real reactor the cluster sockets themselves are offered to the
    first target (see L{srp.server.handover}), so that the port never
    closes; a later target, or a fake reactor, binds the port anew.
    """

    name = "handing-over"
    log = Logger()

    def __init__(self, core: Membership, active: ActiveRole) -> None:
        super().__init__(core)
        #: The active this node was: its ports, passives and their last KeepAlives.
        self.previous = active
        #: The passives still to try, in order.
        self.targets = list(active.passives)
        #: Where the cluster sockets are offered, while they are.
        self.offer: IListeningPort | None = None
        self._offerName = ""
        self._offerMade = False

    @property
    def passives(self) -> list[Member]:
        """The passives of the active this node was."""
        return self.previous.passives

    def begin(self) -> None:
        """
        Tell the subscribers that this node's registrations go and that they
        must subscribe again; offer the cluster sockets (where the reactor
        can), and Activate the first target.
        """
        core = self.core
        core.subscriptions.end(core.nodeId)
        if self.previous.ports.ports and self.targets and core.sharing is not None:
            name = f"srp-handover-{core.auth.cluster:08x}-{core.nodeId:016x}"
            try:
                self.offer = core.sharing.offer(name, self.previous.ports.ports)
                self._offerName = name
            except CannotListenError as e:
                self.log.warn("Cannot offer the cluster sockets for hand-over: {error}",
                              error=e)
        self._activateNext()

    def _activateNext(self) -> None:
        core, previous = self.core, self.previous
        previous.expire()
        self.targets = [p for p in self.targets if p.nodeId in previous.lastSeen]
        handover = ""
        if self.offer is not None and not self._offerMade:
            handover, self._offerMade = self._offerName, True
        else:
            self._withdrawOffer()  # the first target did not take the sockets
        if not self.targets:
            core.machine.stopped()
            return
        target = self.targets.pop(0)
        core.counters["activates_sent"] += 1
        others = tuple(p for p in previous.passives if p.nodeId != target.nodeId)
        now = core.reactor.seconds()
        ages = tuple(int((now - previous.lastSeen.get(p.nodeId, now)) * 1000) for p in others)
        message = _fitting(Activate(others, (), ages, handover), core.registry.registrations())
        # From this node's own socket, which the new active answers with
        # ActivateAck.  Without a socket hand-over the port is released at
        # once, for the new active to bind.
        core.send(message, (target.host, target.port))
        if not handover:
            previous.ports.release()
        core.schedule(core.settings.misses * core.settings.interval, self._activateNext)

    def _withdrawOffer(self) -> None:
        if self.offer is not None:
            self.offer.stopListening()
            self.offer = None

    def release(self) -> None:
        """Withdraw the socket offer and release the cluster ports."""
        self._withdrawOffer()
        self.previous.ports.release()

    def received(self, envelope: Envelope, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """An ActivateAck: the new active took over, and this node stops."""
        if isinstance(envelope.message, ActivateAck):
            self.core.counters["handed_over"] += 1
            self.core.cancelTimer()
            self.core.machine.stopped()
        else:
            super().received(envelope, source, replyFrom)


def _fitting(activate: Activate, registrations: Sequence[Registration]) -> Activate:
    """
    C{activate} with the registrations of as many of its passives as fit
    in one datagram, each passive's all or none, in their order: a passive
    left out finds the new active's count short and re-joins.
    """
    byNode: dict[int, list[Registration]] = {p.nodeId: [] for p in activate.passives}
    for registration in registrations:
        byNode.get(registration.nodeId, []).append(registration)
    room = MAX_PAYLOAD - len(activate.payload())
    carried: list[Registration] = []
    for mine in byNode.values():
        size = 0
        for registration in mine:
            size += registrationSize(registration)
            if size > room:
                break
        else:
            carried += mine
            room -= size
    return evolve(activate, registrations=tuple(carried))
