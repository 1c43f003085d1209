"""
Fencing a hung active on one host.

Several nodes of one host share the cluster address, and the port is the
mutex: an active that is stopped (SIGSTOP, a frozen container, a debugger)
still holds it, so the passive that takes over cannot bind it.  So the
active offers duplicates of its cluster sockets to the processes of its
user on its host, over the machinery of the graceful hand-over
(L{srp.server.handover}), and each passive of the same host holds them
without reading.  The passive that takes over adopts them: it reads the
very socket the old active holds, and since a datagram goes to whichever
holder reads first, a stopped active no longer gets any.

The offer also tells where the active's own cluster socket is, so that the
new active can remind a fenced one that it was outranked (L{Fence.origin}):
once it runs again it steps down at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.interfaces import HandedSocket, SocketOffer
from srp.wire.cluster import Member

if TYPE_CHECKING:
    from srp.server.membership import Membership

#: How long a new active reminds the active it fenced, in seconds, unless
#: it hears from it first.  A node stopped for longer notices the pause by
#: itself when it runs again (see L{srp.server.roles.active}).
REMIND_FOR = 60.0


def fenceName(cluster: int, nodeId: int) -> str:
    """The abstract socket name under which node C{nodeId} of C{cluster} offers its sockets."""
    return f"srp-fence-{cluster:08x}-{nodeId:016x}"


class Fence:
    """
    The duplicates of the active's cluster sockets a node of the same host
    holds, and the offer of its own while it is active.
    """

    log = Logger()

    def __init__(self, core: Membership) -> None:
        self.core = core
        #: The duplicates held, not read.
        self.sockets: tuple[HandedSocket, ...] = ()
        #: The active they were taken from, with the address of its own socket.
        self.origin: Member | None = None
        self._following = 0
        self._attempt = 0

    def offer(self, ports: Sequence[IListeningPort]) -> IListeningPort | None:
        """As the active: offer duplicates of C{ports} to the passives of this host."""
        core = self.core
        if core.sharing is None or not ports or core.socket is None:
            return None
        member = core.socket.transport.getHost()  # type: ignore[union-attr]
        try:
            return core.sharing.offer(fenceName(core.auth.cluster, core.nodeId), ports,
                                      (member.host, member.port))
        except CannotListenError as e:
            self.log.warn("Cannot offer the cluster sockets to the passives of this host: "
                          "{error}", error=e)
            return None

    def follow(self, active: int) -> None:
        """As a passive of C{active}: hold duplicates of its sockets if it is on this host."""
        core = self.core
        if core.sharing is None or active == self._following:
            return
        self.release()
        self._following = active
        self._attempt += 1
        attempt = self._attempt
        taking = core.sharing.take(fenceName(core.auth.cluster, active),
                                   timeout=core.settings.interval)
        taking.addCallbacks(lambda offer: self._took(offer, active, attempt),
                            lambda failure: self._notTaken(failure, attempt))

    def _took(self, offer: SocketOffer, active: int, attempt: int) -> None:
        sharing = self.core.sharing
        assert sharing is not None
        if attempt != self._attempt or not self.core.fits(offer.sockets):
            # Followed another since, or the active listens elsewhere (a
            # cluster across the addresses of one host): nothing to fence.
            for handed in offer.sockets:
                sharing.close(handed)
            return
        self.sockets = offer.sockets
        self.origin = None if offer.member is None else Member(active, *offer.member)
        self.core.counters["fence_taken"] += 1
        self.log.info("Holding the cluster sockets of active {node:016x}, to fence it should "
                      "it hang", node=active)

    def _notTaken(self, failure: Failure, attempt: int) -> None:
        if attempt != self._attempt:
            return
        if failure.check(CancelledError):
            # The active did not hand them over in time: try again at its next answer.
            self._following = 0
        # Otherwise nothing is offered: the active is on another host.
        self.log.info("No cluster sockets to hold for fencing: {error}",
                      error=failure.getErrorMessage())

    def surrender(self) -> tuple[HandedSocket, ...]:
        """Give the held duplicates up, to be adopted; L{origin} stays until L{release}."""
        handed, self.sockets = self.sockets, ()
        self._following = 0
        self._attempt += 1
        return handed

    def release(self) -> None:
        """Close the held duplicates (the socket stays bound while another holds it)."""
        for handed in self.surrender():
            assert self.core.sharing is not None
            self.core.sharing.close(handed)
        self.origin = None
