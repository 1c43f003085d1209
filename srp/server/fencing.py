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

An etcd cluster where only the leader answers fences its leader the same
way (L{srp.server.leaderport}); there the old leader's lease and clock
tell it, and nothing needs to remind it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from twisted.internet.defer import CancelledError
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.interfaces import HandedSocket, ISocketSharing, SocketOffer
from srp.wire.cluster import Member

#: How long a new active reminds the active it fenced, in seconds, unless
#: it hears from it first.  A node stopped for longer notices the pause by
#: itself when it runs again (see L{srp.server.pauses}).
REMIND_FOR = 60.0


def fenceName(cluster: int, nodeId: int) -> str:
    """The abstract socket name under which node C{nodeId} of C{cluster} offers its sockets."""
    return f"srp-fence-{cluster:08x}-{nodeId:016x}"


def boundAt(handed: Sequence[HandedSocket], listen: Sequence[str], port: int) -> bool:
    """Whether C{handed} are bound exactly to C{port} on each address of C{listen}."""
    return {(s.host, s.port) for s in handed} == {(host, port) for host in listen}


class Fence:
    """
    The duplicates of the active's cluster sockets a node of the same host
    holds, and the offer of its own while it is active.

    It serves both backends: the UDP cluster's passives follow the active
    they hear from, an etcd cluster's followers the leader etcd names.
    """

    log = Logger()

    def __init__(self, sharing: ISocketSharing | None, cluster: int, nodeId: int,
                 listen: Sequence[str], port: int, counters: Counter[str],
                 timeout: float) -> None:
        #: How this node passes sockets to the nodes of its host (None: it cannot).
        self.sharing = sharing
        self.cluster = cluster
        self.nodeId = nodeId
        #: Where this node's cluster sockets are bound: the only ones worth holding.
        self.listen = tuple(listen)
        self.port = port
        self.counters = counters
        #: How long to wait for an offer's sockets, in seconds.
        self.timeout = timeout
        #: The duplicates held, not read.
        self.sockets: tuple[HandedSocket, ...] = ()
        #: The active they were taken from, with the address of its own socket.
        self.origin: Member | None = None
        self._following = 0
        self._attempt = 0
        #: Whether the last take of the followed active's sockets failed.
        self._failed = False
        #: The last active whose sockets could not be taken (said once).
        self._unheld = 0

    @property
    def following(self) -> int:
        """The active whose sockets are held or being taken (0: none)."""
        return self._following

    def fits(self, handed: Sequence[HandedSocket]) -> bool:
        """Whether C{handed} are bound exactly where this node listens when it answers."""
        return boundAt(handed, self.listen, self.port)

    def offer(self, ports: Sequence[IListeningPort],
              member: tuple[str, int] | None = None) -> IListeningPort | None:
        """
        As the active: offer duplicates of C{ports} to the passives of this
        host, telling them C{member}, the address of this node's own socket.
        """
        if self.sharing is None or not ports:
            return None
        try:
            return self.sharing.offer(fenceName(self.cluster, self.nodeId), ports, member)
        except CannotListenError as e:
            self.log.warn("Cannot offer the cluster sockets to the passives of this host: "
                          "{error}", error=e)
            return None

    def follow(self, active: int, again: bool = False) -> None:
        """
        As a passive of C{active}: hold duplicates of its sockets if it is on
        this host.  A new active is asked at once; the same one again only
        when C{again}, and then only if the last take failed (it may not have
        offered them yet when first asked).
        """
        if self.sharing is None:
            return
        if active == self._following and not (again and self._failed):
            return
        self.release()
        self._following = active
        self._attempt += 1
        attempt = self._attempt
        taking = self.sharing.take(fenceName(self.cluster, active), timeout=self.timeout)
        taking.addCallbacks(lambda offer: self._took(offer, active, attempt),
                            lambda failure: self._notTaken(failure, active, attempt))

    def _took(self, offer: SocketOffer, active: int, attempt: int) -> None:
        sharing = self.sharing
        assert sharing is not None
        if attempt != self._attempt or not self.fits(offer.sockets):
            # Followed another since, or the active listens elsewhere (a
            # cluster across the addresses of one host): nothing to fence.
            for handed in offer.sockets:
                sharing.close(handed)
            return
        self.sockets = offer.sockets
        self.origin = None if offer.member is None else Member(active, *offer.member)
        self.counters["fence_taken"] += 1
        self.log.info("Holding the cluster sockets of node {node:016x}, which answers on "
                      "them, to fence it should it hang", node=active)

    def _notTaken(self, failure: Failure, active: int, attempt: int) -> None:
        if attempt != self._attempt:
            return
        self._failed = True
        if failure.check(CancelledError):
            # The active did not hand them over in time: try again at its next answer.
            self._following = 0
        # Otherwise nothing is offered: the active is on another host (or,
        # asked again, has not offered them yet).
        if active != self._unheld:
            self._unheld = active
            self.log.info("No cluster sockets to hold for fencing: {error}",
                          error=failure.getErrorMessage())

    def surrender(self) -> tuple[HandedSocket, ...]:
        """Give the held duplicates up, to be adopted; L{origin} stays until L{release}."""
        handed, self.sockets = self.sockets, ()
        self._following = 0
        self._attempt += 1
        self._failed = False
        return handed

    def release(self) -> None:
        """Close the held duplicates (the socket stays bound while another holds it)."""
        for handed in self.surrender():
            assert self.sharing is not None
            self.sharing.close(handed)
        self.origin = None
