"""
Cluster membership: the role a node plays in its cluster, and the core that
every role works through.

The role machine (L{RoleInputs}, built with Automat) holds the current role
(an L{IClusterRole}, from L{srp.server.roles}) as its state data; a role
handles the cluster messages and the periodic work of its part and asks the
machine to move on.  The L{Membership} core keeps only what every role
shares: the node's own socket, the timer, sending, authentication, the
epoch and the counters.  All timing comes from the injected reactor, so the
whole of it runs on a L{Clock} in tests and simulations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from attrs import evolve, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from srp import __version__
from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.interfaces import HandedSocket, IClusterBackend, IClusterRole
from srp.records import Registration
from srp.server.access import AccessPolicy
from srp.server.fencing import Fence
from srp.server.handover import sharingFor
from srp.server.joins import JoinParts
from srp.server.leases import LeaseTable
from srp.server.limits import ReplyLimiter, StateBounds, tallied
from srp.server.mismatch import MismatchReport
from srp.server.pauses import PauseWatch
from srp.server.registry import Registry
from srp.server.remote import RemoteRelays
from srp.server.responder import ResolutionResponder, ResponderStats
from srp.server.roles.active import ActiveRole, ClusterPorts
from srp.server.roles.base import (
    Address,
    IdleRole,
)
from srp.server.roles.machine import RoleInputs, buildMachine
from srp.server.status import passiveStatus, registrationStatus, statusPage
from srp.server.subscriptions import Subscriptions
from srp.wire.cluster import (
    ClusterMessage,
    Probe,
    ResolveReply,
    StatusQuery,
    StatusReply,
    clusterId,
)
from srp.wire.errors import WireError
from srp.wire.mcsqlr import MAX_DATAGRAM

#: Default seconds between KeepAlives.
DEFAULT_INTERVAL = 0.25
#: Default number of unanswered KeepAlives after which the active is presumed dead.
DEFAULT_MISSES = 3


@frozen
class ClusterSettings:
    """
    How a node finds and plays its part in its cluster.

    @ivar listen: the addresses this node binds the cluster port on when it
        is active.
    @ivar addresses: the cluster addresses a node probes to find the active
        (every node's listen addresses, for a cluster across hosts).
    """

    listen: tuple[str, ...]
    addresses: tuple[str, ...]
    port: int = 1434
    name: str = "srp"
    interval: float = DEFAULT_INTERVAL
    misses: int = DEFAULT_MISSES
    key: bytes = field(default=b"", repr=False)
    #: Whether the cluster port answers srp's extension messages at all.
    extensions: bool = True
    #: A node without a cluster: it answers on its port and talks to no other node.
    standalone: bool = False


class _MemberSocket(DatagramProtocol):
    """The node's own cluster socket: probes, Join and KeepAlive go out of it."""

    noisy = False

    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.membership.received(datagram, (addr[0], addr[1]), self)


@implementer(IClusterBackend)
class Membership:
    """
    The core of a node's cluster role: what every role shares.

    It owns the node's own cluster socket, the timer, the authenticator,
    the epoch and the counters, and sends for the roles.  The role itself
    (and what only it knows: the active it follows, its passives, the
    cluster ports it holds) is the state data of L{machine}.  The shared
    L{Registry} holds what the node answers for while it is active.
    """

    log = Logger()

    def __init__(self, reactor: Any, settings: ClusterSettings, registry: Registry,
                 own: Sequence[Registration], stats: ResponderStats,
                 nodeId: int | None = None,
                 onRole: Callable[[str, int], None] | None = None,
                 access: AccessPolicy | None = None, limiter: ReplyLimiter | None = None,
                 bounds: StateBounds | None = None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.registry = registry
        self.stats = stats
        self.nodeId = randomNodeId() if nodeId is None else nodeId
        #: This node's registrations as the Joins that carry them.
        self.joinParts = JoinParts()
        self.setOwn(own)
        self.auth = ClusterAuthenticator(reactor, clusterId(settings.name), self.nodeId,
                                         settings.key)
        self.onRole = onRole
        self.access = access if access is not None else AccessPolicy()
        self.limiter = limiter
        self.bounds = bounds if bounds is not None else StateBounds()
        self.epoch = 0
        #: When the health of each of the node's own instances last changed
        #: (reactor seconds), by instance key: for status.
        self.healthSince: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        #: When the node started (reactor seconds), once it has.
        self.startedAt: float | None = None
        self.socket: _MemberSocket | None = None
        self._ticker: LoopingCall | None = None
        #: Notices when this process did not run (and an active holds its answers).
        self.pauses = PauseWatch(reactor, max(settings.misses - 0.5, 1.5) * settings.interval,
                                 settings.interval, lambda gap: self.current.paused(gap))
        self._timer: IDelayedCall | None = None
        self._stopped: Deferred[None] | None = None
        #: How this node passes cluster sockets to the nodes of its host, if it can.
        self.sharing = sharingFor(reactor)
        #: The duplicates of the active's sockets this node holds to fence it.
        self.fence = Fence(self.sharing, self.auth.cluster, self.nodeId, settings.listen,
                           settings.port, self.counters, settings.interval)
        #: Reports the messages of nodes with another key or cluster name.
        self.mismatch = MismatchReport(self)
        #: The cluster's registrations by command, which every node keeps.
        self.leases = LeaseTable(self)
        #: The relays for the instances answered from other hosts' nodes.
        self.remote = RemoteRelays(reactor, registry, settings.listen)
        #: The clients subscribed to the changes of the answers (while active).
        self.subscriptions = Subscriptions(reactor, self._answer, self.send, self.counters,
                                           lambda: self.bounds.maxSubscriptions)
        registry.watch(self.subscriptions.changed)
        self.machine: RoleInputs = _machineFactory(self)

    def setOwn(self, own: Sequence[Registration]) -> None:
        """The instances this node registers (before it starts: its listeners' ports)."""
        self.own = tuple(evolve(r, nodeId=self.nodeId) for r in own)
        self.joinParts.update(self.own)
        #: The same registrations by instance key.
        self.ownByKey = {r.key: r for r in self.own}

    def updateOwn(self, own: Sequence[Registration]) -> None:
        """
        The instances this node registers changed (their health, a reload):
        the role brings the cluster up to date at once.
        """
        self.setOwn(own)
        self.current.ownChanged()

    @property
    def current(self) -> IClusterRole:
        """The role this node plays now: the role machine's state data."""
        # Automat keeps the current state's data on the machine.  Asking the
        # machine through an input instead would cost a transition lookup
        # for every datagram (several microseconds, most of an ack's cost).
        role: IClusterRole | None = getattr(self.machine, "__automat_data__", None)
        return role if role is not None else IdleRole(self)

    @property
    def role(self) -> str:
        """The name of the role this node plays now: probing, passive, active, ..."""
        return str(self.current.name)

    def start(self) -> None:
        """Find the cluster and take a role in it."""
        self.machine.start()

    def stop(self) -> Deferred[None]:
        """Leave (as a passive) or hand over (as the active); fires when done."""
        return self.machine.stop()

    def halt(self) -> None:
        """
        Stop at once, telling nobody: what a crash does.  For simulations.
        """
        self.machine.halt()

    # -- what the roles work through ------------------------------------------

    def openSocket(self) -> None:
        """Bind this node's own cluster socket (an ephemeral port), and start ticking."""
        self.socket = _MemberSocket(self)
        self._socketPort = self.reactor.listenUDP(0, self.socket,
                                                  interface=self.settings.listen[0],
                                                  maxPacketSize=MAX_DATAGRAM)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.settings.interval, now=False)
        self.pauses.start()

    def closeSocket(self) -> None:
        """Release the cluster socket and stop every timer."""
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self.pauses.stop()
        self.cancelTimer()
        self.fence.release()
        self.remote.close()
        if self.socket is not None:
            self._socketPort.stopListening()
            self.socket = None

    def schedule(self, delay: float, call: Callable[[], None]) -> None:
        """Run C{call} after C{delay} seconds, replacing any pending timer."""
        self.cancelTimer()
        self._timer = self.reactor.callLater(delay, call)

    def cancelTimer(self) -> None:
        """Cancel the pending timer, if any."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def send(self, message: ClusterMessage, to: Address,
             sender: DatagramProtocol | None = None) -> None:
        """Seal C{message} and send it out of C{sender} (default: this node's socket)."""
        protocol = sender if sender is not None else self.socket
        if protocol is None or protocol.transport is None:
            return
        try:
            protocol.transport.write(self.auth.seal(message, self.epoch), to)
        except (OSError, WireError) as e:
            self.counters["unsent"] += 1
            self.log.warn("Could not send {message} to {host}:{port}: {error}",
                          message=type(message).__name__, host=to[0], port=to[1], error=e)

    def probe(self) -> None:
        """Ask every cluster address whether an active is there."""
        self.counters["probes"] += 1
        for host in self.settings.addresses:
            self.send(Probe(), (host, self.settings.port))

    def tally(self, counter: str) -> bool:
        """Count one more C{counter}; whether this one is worth a log line (1, 10, 100, ...)."""
        return tallied(self.counters, counter)

    def listen(self) -> ClusterPorts:
        """
        Bind the cluster port on every listen address.

        @raise CannotListenError: if one cannot be bound; none stays bound.
        """
        return ClusterPorts.bind(self.reactor, self.settings.listen, self.settings.port,
                                 self._responder)

    def memberAddress(self) -> Address | None:
        """Where this node's own cluster socket is bound, while it is open."""
        if self.socket is None or self.socket.transport is None:
            return None
        bound = self.socket.transport.getHost()
        return bound.host, bound.port

    def adopt(self, handed: Sequence[HandedSocket]) -> ClusterPorts | None:
        """
        Answer on the cluster sockets an old active handed over, or close
        them and return L{None} if they are not bound where this node listens.
        """
        assert self.sharing is not None, "only a node that can share sockets receives them"
        return ClusterPorts.adopt(self.sharing, handed, self.settings.listen,
                                  self.settings.port, self._responder, self.counters)

    def _responder(self, host: str) -> ResolutionResponder:
        responder = ResolutionResponder(
            self.registry, self.reactor, self.stats,
            cluster=self.received if self.settings.extensions else None,
            access=self.access, limiter=self.limiter, answers=self.remote.view(host))
        if not self.settings.standalone:
            # Nobody can take over from a standalone node: its replies need no check.
            responder.mayAnswer = self.pauses.mayAnswer
        return responder

    def _answer(self, name: str) -> ResolveReply | None:
        """What a subscriber of C{name} is told: the active's answer (none in other roles)."""
        role = self.current
        return role.answer(name) if isinstance(role, ActiveRole) else None

    def clearRegistry(self) -> None:
        """Forget every registration: the node no longer answers for the cluster."""
        self.leases.unserve()
        for registration in self.registry.registrations():
            self.registry.unregister(registration.name, registration.nodeId)

    def roleChanged(self, role: str) -> None:
        """Tell C{onRole} that the node now plays C{role}."""
        if self.onRole is not None:
            self.onRole(role, self.epoch)

    def finish(self) -> None:
        """Everything is released: fire the Deferred that L{RoleInputs.stop} returned."""
        self.clearRegistry()
        self.subscriptions.close()
        self.closeSocket()
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    def stoppedDeferred(self) -> Deferred[None]:
        """The Deferred that fires when the node has finished stopping."""
        if self._stopped is None:
            self._stopped = Deferred()
        return self._stopped

    # -- the network -----------------------------------------------------

    def received(self, datagram: bytes, source: Address, replyFrom: DatagramProtocol) -> None:
        """
        A cluster message arrived on the node's socket or on a cluster port
        (C{replyFrom}, which replies go out of).
        """
        if not self.access.cluster.open and not self.access.cluster.permits(source[0]):
            self.counters["denied"] += 1
            return
        try:
            envelope = self.auth.open(datagram, source[0])
        except Rejected as e:
            self.mismatch.rejected(e, datagram, source, replyFrom)
            return
        if isinstance(envelope.message, StatusQuery):
            self.send(StatusReply(self.statusPage(envelope.message)), source, replyFrom)
        else:
            self.current.received(envelope, source, replyFrom)

    def _tick(self) -> None:
        try:
            self.pauses.ticked()
            self.current.tick()
        except Exception:
            # The ticker must outlive any bug: a stopped LoopingCall would
            # silently end KeepAlives and expiry.
            self.counters["tick_errors"] += 1
            self.log.failure("Error in the periodic cluster work")

    def status(self) -> dict[str, Any]:
        """What this node knows, for C{srp status}."""
        role = self.current
        return self._summary() | {
            "passives": [passiveStatus(p) for p in role.passives],
            "registrations": [self._describe(r) for r in role.registrations()]}

    def statusPage(self, query: StatusQuery) -> str:
        """The page of L{status} that C{query} asks for, as the JSON a StatusReply carries."""
        role = self.current
        return statusPage(self._summary(), role.passives, role.registrations(), query,
                          describe=self._describe)

    def _describe(self, registration: Registration) -> dict[str, Any]:
        """
        A registration for status, with when its health changed if it is this
        node's, and its lease if it is a registration by command.
        """
        return registrationStatus(registration, self.healthSince.get(registration.key)
                                  if registration.nodeId == self.nodeId else None
                                  ) | self.leases.describe(registration.nodeId)

    def _summary(self) -> dict[str, Any]:
        role = self.current
        started = self.startedAt
        return {
            "node": f"{self.nodeId:016x}",
            "version": __version__,
            "started": started,
            "uptime": None if started is None else int(self.reactor.seconds() - started),
            "cluster": self.settings.name,
            "role": role.name,
            "epoch": self.epoch,
            "active": None if role.active is None
            else f"{role.active.host}:{role.active.port}",
            "passives": [],
            "registrations": [],
            "counters": dict(self.counters) | {
                f"rejected_{k}": v for k, v in self.auth.rejected.items()} | {
                "answered": self.stats.answered, "ignored": self.stats.ignored,
                "malformed": self.stats.malformed, "denied": self.stats.denied,
                "limited": self.stats.limited, "omitted": self.stats.omitted,
                "unsent": self.stats.unsent, "held": self.stats.held},
        }


_machineFactory = buildMachine(Membership)
