"""
Cluster membership: the role a node plays (probing, passive, active) and
the messages that move it between roles.

The role machine (L{RoleInputs}, built with Automat) decides; the
L{Membership} core does the I/O: it probes the cluster addresses, binds the
cluster port when it becomes active, sends Join, KeepAlive and Leave as a
passive, answers them as the active, and hands the port over with Activate
on a graceful stop.  All timing comes from the injected reactor, so the
whole of it runs on a L{Clock} in tests and simulations.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attrs import field, frozen
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.records import Registration
from srp.server.access import AccessPolicy
from srp.server.handover import HandedSocket, canHandOver, offerSockets, takeSockets
from srp.server.limits import ReplyLimiter, StateBounds
from srp.server.registry import Registry
from srp.server.responder import ResolutionResponder, ResponderStats
from srp.wire.cluster import (
    MAX_EPOCH,
    NO_LIST_VERSION,
    Activate,
    ActivateAck,
    ClusterMessage,
    Envelope,
    Join,
    KeepAlive,
    KeepAliveAck,
    Leave,
    Member,
    Probe,
    Redirect,
    ReJoin,
    Resolve,
    ResolveReply,
    StatusQuery,
    StatusReply,
    clusterId,
)
from srp.wire.errors import WireError
from srp.wire.mcsqlr import MAX_DATAGRAM

Address = tuple[str, int]

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


class RoleInputs(Protocol):
    """What can happen to a node; the role machine decides what it means."""

    def start(self) -> None:
        "The node starts: look for an active."

    def activeFound(self) -> None:
        "An active answered (probe answer, KeepAliveAck or announcement)."

    def probeExpired(self) -> None:
        "Nobody answered the probe in time."

    def portBound(self) -> None:
        "This node now holds the cluster port."

    def portRefused(self) -> None:
        "The cluster port could not be bound: someone else holds it."

    def activeLost(self) -> None:
        "Enough KeepAlives went unanswered: the active is presumed dead."

    def takeOver(self) -> None:
        "This node's turn to take over has come (its rank's wait is over)."

    def activated(self) -> None:
        "The active handed over to this node (Activate)."

    def outranked(self) -> None:
        "Another active with a higher epoch (or id, at equal epochs) exists."

    def stop(self) -> Deferred[None]:
        "Stop gracefully: Leave as a passive, hand over as the active."

    def stopped(self) -> None:
        "The hand-over (or the lack of one) is complete."


class _MemberSocket(DatagramProtocol):
    """The node's own cluster socket: probes, Join and KeepAlive go out of it."""

    noisy = False

    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.membership.received(datagram, (addr[0], addr[1]), self)


class Membership:
    """
    The I/O side of a node's cluster role.

    It owns the node's cluster socket, the cluster ports while active, the
    timers, and what it knows of the cluster: the epoch, the active, the
    passive list.  The shared L{Registry} holds what the node answers for
    while it is active.
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
        self.setOwn(own)
        self.auth = ClusterAuthenticator(reactor, clusterId(settings.name), self.nodeId,
                                         settings.key)
        self.onRole = onRole
        self.access = access if access is not None else AccessPolicy()
        self.limiter = limiter
        self.bounds = bounds if bounds is not None else StateBounds()
        self.role = "idle"
        self.epoch = 0
        #: The active's address and node id, as this passive knows them.
        self.active: Address | None = None
        self.activeNode = 0
        #: The passives in join order (as the active keeps it, or as the last
        #: KeepAliveAck told this passive).
        self.passives: list[Member] = []
        #: The version of the passive list: the active changes it with the
        #: list; a passive keeps the one its list came with.
        self.listVersion = NO_LIST_VERSION
        self.lastSeen: dict[int, float] = {}
        self.unanswered = 0
        self.counters: Counter[str] = Counter()
        self.socket: _MemberSocket | None = None
        self.clusterPorts: list[IListeningPort] = []
        self.responders: list[ResolutionResponder] = []
        self._activatedBy: Address | None = None
        self._outrankedBy: Member | None = None
        self._offer: IListeningPort | None = None
        self._offerName = ""
        self._offerMade = False
        self._handoverName = ""
        #: Seconds since each passive's last KeepAlive, as Activate told them.
        self._ages: dict[int, float] = {}
        self._ticker: LoopingCall | None = None
        self._timer: IDelayedCall | None = None
        self._handoverTargets: list[Member] = []
        self._stopped: Deferred[None] | None = None
        self.machine: RoleInputs = _machineFactory(self)

    def setOwn(self, own: Sequence[Registration]) -> None:
        """The instances this node registers (before it starts: its listeners' ports)."""
        self.own = tuple(Registration(r.info, r.hidden, r.dacPort, r.priority, self.nodeId)
                         for r in own)

    # -- helpers the role machine calls ---------------------------------

    def openSocket(self) -> None:
        """Bind this node's own cluster socket (an ephemeral port)."""
        self.socket = _MemberSocket(self)
        self._socketPort = self.reactor.listenUDP(0, self.socket,
                                                  interface=self.settings.listen[0],
                                                  maxPacketSize=MAX_DATAGRAM)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.settings.interval, now=False)

    def closeSocket(self) -> None:
        """Release the cluster socket and stop every timer."""
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self.cancelTimer()
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
             via: DatagramProtocol | None = None) -> None:
        """Seal C{message} and send it from C{via} (default: this node's socket)."""
        sender = via if via is not None else self.socket
        if sender is None or sender.transport is None:
            return
        try:
            sender.transport.write(self.auth.seal(message, self.epoch), to)
        except (OSError, WireError) as e:
            self.counters["unsent"] += 1
            self.log.warn("Could not send {message} to {host}:{port}: {error}",
                          message=type(message).__name__, host=to[0], port=to[1], error=e)

    def probe(self) -> None:
        """Ask every cluster address whether an active is there."""
        self.counters["probes"] += 1
        for host in self.settings.addresses:
            self.send(Probe(), (host, self.settings.port))
        self.schedule(2 * self.settings.interval, self.machine.probeExpired)

    def listen(self) -> None:
        """
        Bind the cluster port on every listen address.

        @raise CannotListenError: if one cannot be bound; none stays bound.
        """
        ports: list[IListeningPort] = []
        responders = []
        try:
            for host in self.settings.listen:
                responder = self._responder()
                ports.append(self.reactor.listenUDP(self.settings.port, responder,
                                                    interface=host,
                                                    maxPacketSize=MAX_DATAGRAM))
                responders.append(responder)
        except CannotListenError:
            for port in ports:
                port.stopListening()
            raise
        self.clusterPorts, self.responders = ports, responders

    def _responder(self) -> ResolutionResponder:
        return ResolutionResponder(
            self.registry, self.reactor, self.stats,
            cluster=self.received if self.settings.extensions else None,
            access=self.access, limiter=self.limiter)

    def bind(self) -> None:
        """Try to bind the cluster port, and tell the role machine how it went."""
        try:
            self.listen()
        except CannotListenError:
            self.machine.portRefused()
        else:
            self.machine.portBound()

    def releasePorts(self) -> None:
        """Stop answering on the cluster port."""
        for port in self.clusterPorts:
            port.stopListening()
        self.clusterPorts, self.responders = [], []

    def becomeActive(self) -> None:
        """Now active: raise the epoch, load own registrations, announce to the passives."""
        self.epoch = min(self.epoch + 1, MAX_EPOCH)
        self.counters["activations"] += 1
        self.role = "active"
        self.active = None
        self.activeNode = self.nodeId
        self.passives = [p for p in self.passives if p.nodeId != self.nodeId]
        # A fresh, unlikely-to-collide version: passives must take this list.
        self.listVersion = random.SystemRandom().randrange(NO_LIST_VERSION)
        now = self.reactor.seconds()
        self.lastSeen = {p.nodeId: now - self._ages.get(p.nodeId, 0.0) for p in self.passives}
        self._ages = {}
        self._expire()
        for registration in self.own:
            self.registry.register(registration)
        self.log.info("Active for cluster {cluster} at epoch {epoch} with {count} passives",
                      cluster=self.settings.name, epoch=self.epoch, count=len(self.passives))
        self._announce()
        self._roleChanged()

    def becomePassive(self) -> None:
        """Now passive: forget the registry, Join the active."""
        self.role = "passive"
        self.unanswered = 0
        self._clearRegistry()
        self.join()
        self.log.info("Passive in cluster {cluster}, active {host}:{port} at epoch {epoch}",
                      cluster=self.settings.name, host=self.active[0] if self.active else "?",
                      port=self.active[1] if self.active else 0, epoch=self.epoch)
        self._roleChanged()

    def join(self) -> None:
        """Send Join with this node's registrations to the active."""
        if self.active is not None:
            self.counters["joins_sent"] += 1
            self.send(Join(self.own), self.active)

    def leave(self) -> None:
        """Tell the active this passive is going."""
        if self.active is not None:
            self.send(Leave(), self.active)

    def stepDown(self) -> None:
        """Stop being active (another active outranks this one); send the passives to it."""
        self.counters["step_downs"] += 1
        self.log.warn("Stepping down: another active outranks epoch {epoch}", epoch=self.epoch)
        if self._outrankedBy is not None:
            for passive in self.passives:
                self.send(Redirect(self._outrankedBy), (passive.host, passive.port),
                          self._clusterProtocol())
        self.releasePorts()
        self._clearRegistry()
        self.activeNode = 0
        self.role = "probing"
        self._roleChanged()

    def waitForTurn(self) -> None:
        """The active is gone: take over after rank x interval."""
        rank = self.rank()
        self.counters["active_lost"] += 1
        self.log.warn("Active {host}:{port} stopped answering; taking over at rank {rank}",
                      host=self.active[0] if self.active else "?",
                      port=self.active[1] if self.active else 0, rank=rank)
        self.role = "waiting"
        self.schedule(rank * self.settings.interval, self.machine.takeOver)

    def rank(self) -> int:
        """This node's place in the passive list (its position in line to take over)."""
        ids = [p.nodeId for p in self.passives]
        return ids.index(self.nodeId) if self.nodeId in ids else len(ids)

    def handOver(self) -> None:
        """
        Graceful stop of the active: Activate the first passive that answers.

        On a real reactor the cluster sockets themselves are offered to the
        first target (see L{srp.server.handover}), so that the port never
        closes; a later target, or a fake reactor, binds the port anew.
        """
        self._handoverTargets = list(self.passives)
        if self.clusterPorts and self._handoverTargets and canHandOver(self.reactor):
            name = f"srp-handover-{self.auth.cluster:08x}-{self.nodeId:016x}"
            try:
                self._offer = offerSockets(self.reactor, name, self.clusterPorts)
                self._offerName = name
            except CannotListenError as e:
                self.log.warn("Cannot offer the cluster sockets for hand-over: {error}",
                              error=e)
        self._activateNext()

    def _withdrawOffer(self) -> None:
        if self._offer is not None:
            self._offer.stopListening()
            self._offer = None

    def _activateNext(self) -> None:
        self._expire()
        self._handoverTargets = [p for p in self._handoverTargets if p.nodeId in self.lastSeen]
        handover = ""
        if self._offer is not None and not self._offerMade:
            handover, self._offerMade = self._offerName, True
        else:
            self._withdrawOffer()  # the first target did not take the sockets
        if not self._handoverTargets:
            self.machine.stopped()
            return
        target = self._handoverTargets.pop(0)
        self.counters["activates_sent"] += 1
        others = tuple(p for p in self.passives if p.nodeId != target.nodeId)
        now = self.reactor.seconds()
        ages = tuple(int((now - self.lastSeen.get(p.nodeId, now)) * 1000) for p in others)
        registrations = tuple(r for r in self.registry.registrations()
                              if r.nodeId != self.nodeId)
        message = Activate(others, registrations, ages, handover)
        try:
            message.payload()
        except WireError:
            message = Activate(others, (), ages, handover)  # too big: passives re-join
        # From this node's own socket, which the new active answers with
        # ActivateAck.  Without a socket hand-over the port is released at
        # once, for the new active to bind.
        self.send(message, (target.host, target.port))
        if not handover:
            self.releasePorts()
        self.schedule(self.settings.misses * self.settings.interval, self._activateNext)

    def finish(self) -> None:
        """Everything is released: fire the Deferred that L{stop} returned."""
        wasActive = self.role in ("active", "handing-over")
        self.role = "stopped"
        if wasActive:
            self._roleChanged()
        self._withdrawOffer()
        self._clearRegistry()
        self.releasePorts()
        self.closeSocket()
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    def stoppedDeferred(self) -> Deferred[None]:
        """The Deferred that fires when the node has finished stopping."""
        if self._stopped is None:
            self._stopped = Deferred()
        return self._stopped

    def halt(self) -> None:
        """
        Stop at once, telling nobody: what a crash does.  For simulations.
        """
        self.role = "crashed"
        self.releasePorts()
        self.closeSocket()

    # -- the network -----------------------------------------------------

    def received(self, datagram: bytes, source: Address, via: DatagramProtocol) -> None:
        """A cluster message arrived on the node's socket or on a cluster port."""
        if not self.access.cluster.open and not self.access.cluster.permits(source[0]):
            self.counters["denied"] += 1
            return
        try:
            envelope = self.auth.open(datagram, source[0])
        except Rejected as e:
            self.log.debug("Rejected a cluster message from {host}:{port}: {error}",
                           host=source[0], port=source[1], error=str(e))
            return
        handler = self._handlers.get(type(envelope.message))
        if handler is not None:
            handler(self, envelope, source, via)

    def _onProbe(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        if self.role == "active":
            self._ack(source, via)

    def _onJoin(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        if self.role != "active":
            return
        message = envelope.message
        assert isinstance(message, Join)
        sender = envelope.sender
        known = [p for p in self.passives if p.nodeId == sender]
        if not known and len(self.passives) >= self.bounds.maxPassives:
            self._refuse("passives_refused", "Refused a Join: the passive list is full "
                         "({count} passives)", count=len(self.passives))
            return
        self.counters["joins"] += 1
        self.registry.removeNode(sender)
        accepted = [r for r in message.registrations if r.nodeId == sender]
        if len(accepted) > self.bounds.maxRegistrationsPerNode:
            self._refuse("registrations_refused", "A Join carried {count} registrations; "
                         "kept the first {limit}", count=len(accepted),
                         limit=self.bounds.maxRegistrationsPerNode)
            accepted = accepted[:self.bounds.maxRegistrationsPerNode]
        for registration in accepted:
            if (len(self.registry) >= self.bounds.maxInstances
                    and self.registry.lookup(registration.name) is None):
                self._refuse("instances_refused", "Refused instance {name}: the cluster "
                             "holds {limit} instances", name=registration.name,
                             limit=self.bounds.maxInstances)
                continue
            self.registry.register(registration)
        member = Member(sender, source[0], source[1])
        if not known:
            self.passives.append(member)
            self._passivesChanged()
        elif known[0] != member:
            self.passives = [member if p.nodeId == sender else p for p in self.passives]
            self._passivesChanged()
        self.lastSeen[sender] = self.reactor.seconds()
        self._ack(source, via)

    def _passivesChanged(self) -> None:
        self.listVersion = (self.listVersion + 1) % NO_LIST_VERSION

    def _ack(self, to: Address, via: DatagramProtocol | None, full: bool = True) -> None:
        passives = tuple(self.passives) if full else ()
        self.send(KeepAliveAck(passives, self.listVersion), to, via)

    def _refuse(self, counter: str, message: str, **fields: object) -> None:
        self.counters[counter] += 1
        if self.counters[counter] in (1, 10, 100) or self.counters[counter] % 1000 == 0:
            self.log.warn(message + " (refused {refusals} times)", refusals=self.counters[counter],
                          **fields)

    def _onLeave(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        if self.role == "active":
            self.counters["leaves"] += 1
            self._forget(envelope.sender)

    def _onKeepAlive(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        if self.role != "active":
            return
        message = envelope.message
        assert isinstance(message, KeepAlive)
        held = self.registry.countOf(envelope.sender)
        if envelope.sender not in self.lastSeen or held != message.registrations:
            self.counters["rejoins_asked"] += 1
            self.send(ReJoin(), source, via)
            return
        self.lastSeen[envelope.sender] = self.reactor.seconds()
        self._ack(source, via, full=message.listVersion != self.listVersion)

    def _onAck(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        message = envelope.message
        assert isinstance(message, KeepAliveAck)
        theirs = (envelope.epoch, envelope.sender)
        if self.role == "active":
            if theirs > (self.epoch, self.nodeId):
                self.epoch = envelope.epoch
                self._outrankedBy = Member(envelope.sender, source[0], source[1])
                self.machine.outranked()
            return
        if self.role == "passive" and theirs < (self.epoch, self.activeNode):
            # A passive follows the active with the highest epoch it knows;
            # a node looking for an active (probing, waiting) takes any.
            self.counters["stale_epoch"] += 1
            return
        followingAnother = self.role == "passive" and envelope.sender != self.activeNode
        if envelope.sender != self.activeNode:
            self.listVersion = NO_LIST_VERSION
        self.epoch = envelope.epoch
        self.active = source
        self.activeNode = envelope.sender
        if message.passives:
            self.passives = list(message.passives)
            self.listVersion = message.listVersion
        self.unanswered = 0
        self.machine.activeFound()
        if followingAnother:
            self.join()

    def _onReJoin(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        if self.role == "passive" and envelope.sender == self.activeNode:
            self.counters["rejoins"] += 1
            self.join()

    def _onRedirect(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        message = envelope.message
        assert isinstance(message, Redirect)
        if self.role == "passive" and envelope.sender == self.activeNode:
            self.counters["redirected"] += 1
            self.active = (message.active.host, message.active.port)
            self.activeNode = message.active.nodeId
            self.unanswered = 0
            self.join()

    def _onActivate(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        message = envelope.message
        assert isinstance(message, Activate)
        if self.role != "passive" or envelope.sender != self.activeNode:
            self.counters["activate_refused"] += 1
            return
        self.counters["activated"] += 1
        self._activatedBy = source
        self._handoverName = message.handover
        self.passives = [p for p in message.passives if p.nodeId != self.nodeId]
        self._ages = {p.nodeId: age / 1000 for p, age in zip(message.passives, message.ages,
                                                              strict=True)}
        known = {p.nodeId for p in self.passives}
        for registration in message.registrations:
            if registration.nodeId in known:
                self.registry.register(registration)
        self.machine.activated()

    def _onActivateAck(self, envelope: Envelope, source: Address,
                       via: DatagramProtocol) -> None:
        if self.role == "handing-over":
            self.counters["handed_over"] += 1
            self.cancelTimer()
            self.machine.stopped()

    def _onResolve(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        message = envelope.message
        assert isinstance(message, Resolve)
        if self.role == "active":
            visible = tuple(r for r in self.registry.candidates(message.instanceName)
                            if not r.hidden)
            hosts = {p.nodeId: p.host for p in self.passives}
            self.send(ResolveReply(message.instanceName, visible,
                                   tuple(hosts.get(r.nodeId, "") for r in visible)),
                      source, via)

    def _onStatus(self, envelope: Envelope, source: Address, via: DatagramProtocol) -> None:
        self.send(StatusReply(json.dumps(self.status())), source, via)

    _handlers: dict[type, Callable[[Membership, Envelope, Address, DatagramProtocol], None]] = {
        Probe: _onProbe, Join: _onJoin, Leave: _onLeave, KeepAlive: _onKeepAlive,
        KeepAliveAck: _onAck, ReJoin: _onReJoin, Activate: _onActivate,
        ActivateAck: _onActivateAck, Resolve: _onResolve, Redirect: _onRedirect,
        StatusQuery: _onStatus,
    }

    def takePorts(self) -> None:
        """
        Activated: take the old active's sockets if it offers them, else bind.
        """
        name, self._handoverName = self._handoverName, ""
        if not name or not canHandOver(self.reactor):
            self.schedule(0, self.bind)
            return
        taken = takeSockets(self.reactor, name, timeout=self.settings.interval)
        taken.addCallbacks(self._adopt, lambda failure: self.bind())

    def _adopt(self, handed: list[HandedSocket]) -> None:
        wanted = {(host, self.settings.port) for host in self.settings.listen}
        if {(s.host, s.port) for s in handed} != wanted:
            for s in handed:
                os.close(s.fd)
            self.bind()
            return
        for s in handed:
            responder = self._responder()
            self.clusterPorts.append(self.reactor.adoptDatagramPort(
                s.fd, s.family, responder, maxPacketSize=MAX_DATAGRAM))
            self.responders.append(responder)
            os.close(s.fd)
        self.counters["sockets_taken"] += len(handed)
        self.machine.portBound()

    def ackActivation(self) -> None:
        """Tell the old active, if it handed over to this node, that the node took over."""
        if self._activatedBy is not None:
            self.send(ActivateAck(), self._activatedBy)
            self._activatedBy = None

    # -- periodic work -------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._periodic()
        except Exception:
            # The ticker must outlive any bug: a stopped LoopingCall would
            # silently end KeepAlives and expiry.
            self.counters["tick_errors"] += 1
            self.log.failure("Error in the periodic cluster work")

    def _periodic(self) -> None:
        if self.role == "passive":
            if self.unanswered >= self.settings.misses:
                self.machine.activeLost()
                return
            self.unanswered += 1
            assert self.active is not None
            self.send(KeepAlive(len(self.own), self.listVersion), self.active)
        elif self.role == "active":
            self._expire()
            for host in self.settings.addresses:
                if host not in self.settings.listen:
                    self.send(Probe(), (host, self.settings.port))

    def _expire(self) -> None:
        deadline = self.reactor.seconds() - (self.settings.misses + 1) * self.settings.interval
        for nodeId, seen in list(self.lastSeen.items()):
            if seen < deadline:
                self.counters["expired"] += 1
                self.log.warn("Passive {node:016x} stopped sending KeepAlives: "
                              "its registrations expire", node=nodeId)
                self._forget(nodeId)

    def _forget(self, nodeId: int) -> None:
        self.registry.removeNode(nodeId)
        self.lastSeen.pop(nodeId, None)
        remaining = [p for p in self.passives if p.nodeId != nodeId]
        if len(remaining) != len(self.passives):
            self.passives = remaining
            self._passivesChanged()

    def _announce(self) -> None:
        via = self._clusterProtocol()
        for passive in self.passives:
            self._ack((passive.host, passive.port), via)

    def _clusterProtocol(self) -> DatagramProtocol | None:
        return self.responders[0] if self.responders else None

    def _clearRegistry(self) -> None:
        for registration in self.registry.registrations():
            self.registry.unregister(registration.name, registration.nodeId)

    def _roleChanged(self) -> None:
        if self.onRole is not None:
            self.onRole(self.role, self.epoch)

    def status(self) -> dict[str, Any]:
        """What this node knows, for C{srp status}."""
        return {
            "node": f"{self.nodeId:016x}",
            "cluster": self.settings.name,
            "role": self.role,
            "epoch": self.epoch,
            "active": None if self.role == "active" or self.active is None
            else f"{self.active[0]}:{self.active[1]}",
            "passives": [{"node": f"{p.nodeId:016x}", "address": f"{p.host}:{p.port}"}
                         for p in self.passives],
            "registrations": [
                {"instance": r.name, "node": f"{r.nodeId:016x}", "priority": r.priority,
                 "tcp": r.info.tcp, "hidden": r.hidden}
                for r in (self.registry.registrations() if self.role == "active" else self.own)
            ],
            "counters": dict(self.counters) | {
                f"rejected_{k}": v for k, v in self.auth.rejected.items()} | {
                "answered": self.stats.answered, "ignored": self.stats.ignored,
                "malformed": self.stats.malformed, "denied": self.stats.denied,
                "limited": self.stats.limited, "omitted": self.stats.omitted,
                "unsent": self.stats.unsent},
        }


def _buildMachine() -> Callable[[Membership], RoleInputs]:
    builder = TypeMachineBuilder(RoleInputs, Membership)
    idle = builder.state("idle")
    probing = builder.state("probing")
    binding = builder.state("binding")
    passive = builder.state("passive")
    waiting = builder.state("waiting")
    active = builder.state("active")
    handingOver = builder.state("handingOver")
    stopped = builder.state("stopped")

    @idle.upon(RoleInputs.start).to(probing)
    def start(inputs: RoleInputs, core: Membership) -> None:
        core.openSocket()
        core.role = "probing"
        core.probe()

    @probing.upon(RoleInputs.activeFound).to(passive)
    @waiting.upon(RoleInputs.activeFound).to(passive)
    def found(inputs: RoleInputs, core: Membership) -> None:
        core.cancelTimer()
        core.becomePassive()

    passive.upon(RoleInputs.activeFound).loop().returns(None)
    active.upon(RoleInputs.activeFound).loop().returns(None)
    binding.upon(RoleInputs.activeFound).loop().returns(None)
    handingOver.upon(RoleInputs.activeFound).loop().returns(None)
    stopped.upon(RoleInputs.activeFound).loop().returns(None)

    @probing.upon(RoleInputs.probeExpired).to(binding)
    @waiting.upon(RoleInputs.probeExpired).to(binding)
    def expired(inputs: RoleInputs, core: Membership) -> None:
        core.role = "binding"
        core.bind()

    @binding.upon(RoleInputs.portBound).to(active)
    @idle.upon(RoleInputs.portBound).to(active)
    def bound(inputs: RoleInputs, core: Membership) -> None:
        if core.socket is None:
            core.openSocket()
        core.becomeActive()
        core.ackActivation()

    @binding.upon(RoleInputs.portRefused).to(probing)
    def refused(inputs: RoleInputs, core: Membership) -> None:
        core.role = "probing"
        core.counters["bind_refused"] += 1
        refusals = core.counters["bind_refused"]
        if refusals in (1, 10, 100) or refusals % 1000 == 0:
            core.log.warn("Cannot bind the cluster port {port}, and no active answers "
                          "there ({count} times): another program may hold it",
                          port=core.settings.port, count=core.counters["bind_refused"])
        core.schedule(core.settings.interval, core.probe)

    @passive.upon(RoleInputs.activeLost).to(waiting)
    def lost(inputs: RoleInputs, core: Membership) -> None:
        core.waitForTurn()

    @waiting.upon(RoleInputs.takeOver).to(waiting)
    def turn(inputs: RoleInputs, core: Membership) -> None:
        if core.rank() == 0:
            inputs.probeExpired()
        else:
            core.probe()

    @passive.upon(RoleInputs.activated).to(binding)
    def activated(inputs: RoleInputs, core: Membership) -> None:
        core.role = "binding"
        core.takePorts()

    @active.upon(RoleInputs.outranked).to(probing)
    def outranked(inputs: RoleInputs, core: Membership) -> None:
        core.stepDown()
        core.probe()

    for state in (probing, binding, passive, waiting, handingOver, stopped, idle):
        state.upon(RoleInputs.outranked).loop().returns(None)

    @probing.upon(RoleInputs.stop).to(stopped)
    @binding.upon(RoleInputs.stop).to(stopped)
    @waiting.upon(RoleInputs.stop).to(stopped)
    @idle.upon(RoleInputs.stop).to(stopped)
    def stopQuietly(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        done = core.stoppedDeferred()
        core.finish()
        return done

    @passive.upon(RoleInputs.stop).to(stopped)
    def stopPassive(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        done = core.stoppedDeferred()
        core.leave()
        core.finish()
        return done

    @active.upon(RoleInputs.stop).to(handingOver)
    def stopActive(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        done = core.stoppedDeferred()
        core.role = "handing-over"
        core.handOver()
        return done

    @handingOver.upon(RoleInputs.stop).loop()
    @stopped.upon(RoleInputs.stop).loop()
    def stopAgain(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        if core.role == "stopped":
            return succeed(None)
        return core.stoppedDeferred()

    @handingOver.upon(RoleInputs.stopped).to(stopped)
    def handedOver(inputs: RoleInputs, core: Membership) -> None:
        core.finish()

    return builder.build()


_machineFactory = _buildMachine()
