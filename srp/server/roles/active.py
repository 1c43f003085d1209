"""The active: it answers for the cluster on the cluster port and keeps its passives."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.interfaces import HandedSocket, ISocketSharing
from srp.records import Registration
from srp.server.fencing import REMIND_FOR, boundAt
from srp.server.joins import Assembled, JoinAssembler, PartDropped
from srp.server.responder import ResolutionResponder
from srp.server.roles.base import Address, ClusterView, Role
from srp.wire.cluster import (
    MAX_COUNT,
    MAX_EPOCH,
    NO_LIST_VERSION,
    Envelope,
    Join,
    KeepAlive,
    KeepAliveAck,
    Leave,
    Member,
    NotifyAck,
    Probe,
    Redirect,
    Register,
    ReJoin,
    Resolve,
    ResolveReply,
    Subscribe,
    Unregister,
    registrationsDigest,
)
from srp.wire.mcsqlr import MAX_DATAGRAM

if TYPE_CHECKING:
    from srp.server.membership import Membership


@define
class ClusterPorts:
    """The cluster port, bound on each listen address, and the responder answering on each."""

    ports: list[IListeningPort]
    responders: list[ResolutionResponder]
    #: Where duplicates of these sockets are offered to the passives of this host.
    offer: IListeningPort | None = None
    #: The active these sockets were taken from while it still held them.
    fenced: Member | None = field(default=None, kw_only=True)

    @classmethod
    def bind(cls, reactor: Any, listen: Sequence[str], port: int,
             responder: Callable[[str], ResolutionResponder]) -> ClusterPorts:
        """
        Bind UDP C{port} on every address of C{listen}, each with a new
        C{responder(address)}.

        @raise CannotListenError: if one cannot be bound; none stays bound.
        """
        ports: list[IListeningPort] = []
        responders = []
        try:
            for host in listen:
                answering = responder(host)
                ports.append(reactor.listenUDP(port, answering, interface=host,
                                               maxPacketSize=MAX_DATAGRAM))
                responders.append(answering)
        except CannotListenError:
            for bound in ports:
                bound.stopListening()
            raise
        return cls(ports, responders)

    @classmethod
    def adopt(cls, sharing: ISocketSharing, handed: Sequence[HandedSocket],
              listen: Sequence[str], port: int,
              responder: Callable[[str], ResolutionResponder],
              counters: Counter[str]) -> ClusterPorts | None:
        """
        Answer on C{handed}, sockets another node of this host passed, each
        with a new C{responder(address)}; or close them and return L{None}
        if they are not bound to C{port} on exactly the addresses of C{listen}.
        """
        if not boundAt(handed, listen, port):
            for s in handed:
                sharing.close(s)
            return None
        adopted = cls([], [])
        for s in handed:
            answering = responder(s.host)
            adopted.ports.append(sharing.adopt(s, answering, MAX_DATAGRAM))
            adopted.responders.append(answering)
        counters["sockets_taken"] += len(handed)
        return adopted

    @property
    def sender(self) -> DatagramProtocol | None:
        """The socket that messages to the passives go out of."""
        return self.responders[0] if self.responders else None

    def release(self) -> None:
        """Stop answering on the cluster port, and offering it."""
        if self.offer is not None:
            self.offer.stopListening()
            self.offer = None
        for port in self.ports:
            port.stopListening()
        self.ports, self.responders = [], []


class ActiveRole(Role):
    """
    The active: answer probes, Joins, KeepAlives, Leaves and Resolves; keep
    the passive list (join order) and each passive's registrations; expire
    the passives whose KeepAlives stop; step down for an active that
    outranks this one.
    """

    name = "active"
    log = Logger()

    def __init__(self, core: Membership, ports: ClusterPorts, view: ClusterView) -> None:
        super().__init__(core)
        #: The bound cluster ports: this role holds them while it is active.
        self.ports = ports
        self._passives = [p for p in view.passives if p.nodeId != core.nodeId]
        # A fresh, unlikely-to-collide version: passives must take this list.
        self.listVersion = random.SystemRandom().randrange(NO_LIST_VERSION)
        now = core.reactor.seconds()
        #: When each passive last sent a KeepAlive (or Join), by node id.
        self.lastSeen = {p.nodeId: now - view.ages.get(p.nodeId, 0.0) for p in self._passives}
        #: How many registrations each passive's last complete Join carried
        #: (an Activate's: those it handed over), what its KeepAlives count.
        self.carried = {p.nodeId: core.registry.countOf(p.nodeId) for p in self._passives}
        #: The L{registrationsDigest} of each passive's registrations here,
        #: what its KeepAlives carry; none when a Join passed the node's bound.
        self.digests: dict[int, int | None] = _digestsOf(
            core.registry.registrations(), self.carried)
        #: The Joins in parts being received.
        self.assembler = JoinAssembler()
        #: The active this one fenced, reminded that it is outranked until it
        #: joins or C{remindUntil} passes.
        self.fenced = ports.fenced
        self.remindUntil = now + REMIND_FOR
        core.remote.passivesAre(self._passives)

    @property
    def passives(self) -> list[Member]:
        """The passives in join order."""
        return self._passives

    def begin(self) -> None:
        """Now active: raise the epoch, answer for own registrations, announce to the passives."""
        core = self.core
        core.epoch = min(core.epoch + 1, MAX_EPOCH)
        core.counters["activations"] += 1
        self.expire()
        for registration in core.own:
            core.registry.register(registration)
        core.leases.serve()
        self.log.info("Active for cluster {cluster} at epoch {epoch} with {count} passives",
                      cluster=core.settings.name, epoch=core.epoch, count=len(self._passives))
        # Offer the sockets before the passives hear of this node: they ask
        # for them as soon as they do.
        core.fence.release()
        self.ports.offer = core.fence.offer(self.ports.ports, core.memberAddress())
        for passive in self._passives:
            self._ack((passive.host, passive.port), self.ports.sender)
        self._remind()

    def registrations(self) -> Sequence[Registration]:
        """Every registration this active answers for."""
        return self.core.registry.registrations()

    def ownChanged(self) -> None:
        """Answer for the node's own registrations as they are now, in this reactor turn."""
        core = self.core
        for registration in core.own:
            core.registry.register(registration)
        kept = {r.key for r in core.own}
        for registration in core.registry.registrations():
            if registration.nodeId == core.nodeId and registration.key not in kept:
                core.registry.unregister(registration.name, core.nodeId)

    def received(self, envelope: Envelope, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """Answer the cluster's messages."""
        if self.fenced is not None and envelope.sender == self.fenced.nodeId and isinstance(
                envelope.message, (Join, KeepAlive)):
            self.fenced = None  # it stepped down and follows this node
        match envelope.message:
            case Probe():
                self._ack(source, replyFrom)
            case Join() as join:
                self._joined(join, envelope.sender, source, replyFrom)
            case KeepAlive() as keepAlive:
                self._keptAlive(keepAlive, envelope.sender, source, replyFrom)
            case Leave():
                self.core.counters["leaves"] += 1
                self._forget(envelope.sender)
            case Resolve() as resolve:
                self._resolve(resolve, source, replyFrom)
            case Subscribe() | NotifyAck() as subscription:
                self.core.subscriptions.received(subscription, source, replyFrom)
            case Register() | Unregister() as lease:
                self.core.leases.request(lease, source, replyFrom,
                                         [(p.host, p.port) for p in self._passives])
            case KeepAliveAck():
                self._challenged(envelope, source)
            case _:
                super().received(envelope, source, replyFrom)

    def tick(self) -> None:
        """
        Remind a fenced active; expire silent passives; probe the other
        cluster addresses for a second active.
        """
        settings = self.core.settings
        self._remind()
        self.expire()
        self.core.leases.tick([(p.host, p.port) for p in self._passives])
        for host in settings.addresses:
            if host not in settings.listen:
                self.core.send(Probe(), (host, settings.port))

    def _remind(self) -> None:
        """
        Tell the active this node fenced that it is outranked; and ask at the
        cluster address whether another active reads the socket too (one
        that took over while this node's view was stale): the lower of the
        two steps down.
        """
        fenced, core = self.fenced, self.core
        if fenced is None:
            return
        if core.reactor.seconds() > self.remindUntil:
            self.fenced = None
            return
        core.counters["fence_reminders"] += 1
        self._ack((fenced.host, fenced.port), self.ports.sender)
        for host in core.settings.listen:
            core.send(Probe(), (host, core.settings.port))

    def paused(self, gap: float) -> bool:
        """
        This node did not run for C{gap} seconds (stopped, or starved): its
        passives may have taken over.  Ask each directly; one that did
        answers with a higher epoch, and this node steps down.  Until then,
        hold the answers back.
        """
        if self.core.tally("pauses"):
            self.log.warn("Did not run for {gap:.2f} s ({count} pauses): asking the passives "
                          "whether one took over", gap=gap, count=self.core.counters["pauses"])
        for passive in self._passives:
            self.core.send(Probe(), (passive.host, passive.port))
        return True

    def expire(self) -> None:
        """
        Forget the passives (and their registrations) that stopped sending
        KeepAlives, and the Joins in parts that stopped coming.
        """
        settings = self.core.settings
        deadline = self.core.reactor.seconds() - (settings.misses + 1) * settings.interval
        self.assembler.expire(deadline)
        for nodeId, seen in list(self.lastSeen.items()):
            if seen < deadline:
                self.core.counters["expired"] += 1
                self.log.warn("Passive {node:016x} stopped sending KeepAlives: "
                              "its registrations expire", node=nodeId)
                self._forget(nodeId)

    def _forget(self, nodeId: int) -> None:
        self.core.registry.removeNode(nodeId)
        self.lastSeen.pop(nodeId, None)
        self.carried.pop(nodeId, None)
        self.digests.pop(nodeId, None)
        self.assembler.forget(nodeId)
        remaining = [p for p in self._passives if p.nodeId != nodeId]
        if len(remaining) != len(self._passives):
            self._passives = remaining
            self._passivesChanged()

    def _passivesChanged(self) -> None:
        self.listVersion = (self.listVersion + 1) % NO_LIST_VERSION
        self.core.remote.passivesAre(self._passives)

    def _ack(self, to: Address, sender: DatagramProtocol | None, full: bool = True) -> None:
        passives = tuple(self._passives) if full else ()
        self.core.send(KeepAliveAck(passives, self.listVersion), to, sender)

    def _joined(self, join: Join, nodeId: int, source: Address,
                replyFrom: DatagramProtocol) -> None:
        core = self.core
        known = nodeId in self.lastSeen
        if not known and len(self._passives) >= core.bounds.maxPassives:
            self._refuse("passives_refused", "Refused a Join: the passive list is full "
                         "({count} passives)", count=len(self._passives))
            return
        now = core.reactor.seconds()
        if join.generation:
            core.counters["join_parts"] += 1
        try:
            outcome = self.assembler.add(nodeId, join, now, core.bounds)
        except PartDropped as e:
            core.counters[f"parts_{e.reason}"] += 1
            return
        if known:
            self.lastSeen[nodeId] = now  # a part is a sign of life too
        if isinstance(outcome, ReJoin):
            core.counters["parts_asked"] += 1
            core.send(outcome, source, replyFrom)
        elif isinstance(outcome, Assembled):
            self._apply(outcome, nodeId, source, replyFrom)

    def _apply(self, joined: Assembled, nodeId: int, source: Address,
               replyFrom: DatagramProtocol) -> None:
        """A Join is complete: it replaces the node's registrations, all at once."""
        bounds, registry = self.core.bounds, self.core.registry
        self.core.counters["joins"] += 1
        registry.removeNode(nodeId)
        if joined.carried > len(joined.registrations):
            self._refuse("registrations_refused", "A Join carried {count} registrations; "
                         "kept the first {limit}", count=joined.carried,
                         limit=bounds.maxRegistrationsPerNode)
        for registration in joined.registrations:
            if len(registry) >= bounds.maxInstances and registry.lookup(registration.name) is None:
                self._refuse("instances_refused", "Refused instance {name}: the cluster "
                             "holds {limit} instances", name=registration.name,
                             limit=bounds.maxInstances)
                continue
            registry.register(registration)
        member = Member(nodeId, source[0], source[1])
        known = [p for p in self._passives if p.nodeId == nodeId]
        if not known:
            self._passives.append(member)
            self._passivesChanged()
        elif known[0] != member:
            self._passives = [member if p.nodeId == nodeId else p for p in self._passives]
            self._passivesChanged()
        self.lastSeen[nodeId] = self.core.reactor.seconds()
        self.carried[nodeId] = joined.carried
        self.digests[nodeId] = (registrationsDigest(joined.registrations)
                                if joined.carried == len(joined.registrations) else None)
        self._ack(source, replyFrom)
        for lease in self.core.leases.leases():
            self.core.leases.forward(lease, source, replyFrom)

    def _refuse(self, counter: str, message: str, **fields: object) -> None:
        if self.core.tally(counter):
            self.log.warn(message + " (refused {refusals} times)",
                          refusals=self.core.counters[counter], **fields)

    def _keptAlive(self, keepAlive: KeepAlive, nodeId: int, source: Address,
                   replyFrom: DatagramProtocol) -> None:
        core, now = self.core, self.core.reactor.seconds()
        if self.assembler.assembling(nodeId):
            if nodeId in self.lastSeen:
                self.lastSeen[nodeId] = now
            # Parts keep coming, each window asked for as the last one ends;
            # after an interval without one, a part or a ReJoin was lost.
            rejoin = self.assembler.askAgain(nodeId, now, core.settings.interval)
            if rejoin is not None:
                core.counters["parts_asked_again"] += 1
                core.send(rejoin, source, replyFrom)
            return
        carried, digest = self.carried.get(nodeId), self.digests.get(nodeId)
        if (nodeId not in self.lastSeen or carried is None
                or min(carried, MAX_COUNT) != keepAlive.registrations
                or (keepAlive.digest and digest is not None and digest != keepAlive.digest)):
            core.counters["rejoins_asked"] += 1
            core.send(ReJoin(), source, replyFrom)
            return
        self.lastSeen[nodeId] = now
        self._ack(source, replyFrom, full=keepAlive.listVersion != self.listVersion)

    def answer(self, name: str) -> ResolveReply:
        """What an extended resolve of C{name} is answered (and its subscribers told)."""
        visible = tuple(r for r in self.core.registry.candidates(name) if not r.hidden)
        hosts = self.core.leases.hosts() | {p.nodeId: p.host for p in self._passives}
        return ResolveReply(name, visible, tuple(hosts.get(r.nodeId, "") for r in visible))

    def _resolve(self, resolve: Resolve, source: Address, replyFrom: DatagramProtocol) -> None:
        if not self.core.pauses.mayAnswer():
            self.core.counters["resolves_held"] += 1
            return
        self.core.send(self.answer(resolve.instanceName), source, replyFrom)

    def _challenged(self, envelope: Envelope, source: Address) -> None:
        """Another active answered: step down if it outranks this one, else tell it."""
        core = self.core
        if (envelope.epoch, envelope.sender) <= (core.epoch, core.nodeId):
            core.counters["outranked_told"] += 1
            self._ack(source, self.ports.sender, full=False)
            return
        core.epoch = envelope.epoch
        core.counters["step_downs"] += 1
        self.log.warn("Stepping down: another active outranks epoch {epoch}", epoch=core.epoch)
        winner = Member(envelope.sender, source[0], source[1])
        for passive in self._passives:
            core.send(Redirect(winner), (passive.host, passive.port), self.ports.sender)
        self.ports.release()
        core.clearRegistry()
        core.machine.outranked(ClusterView(None, tuple(self._passives), self.listVersion))


def _digestsOf(registrations: Sequence[Registration],
               nodes: Iterable[int]) -> dict[int, int | None]:
    """The L{registrationsDigest} of what each of C{nodes} holds in C{registrations}."""
    byNode: dict[int, list[Registration]] = {node: [] for node in nodes}
    for registration in registrations:
        if registration.nodeId in byNode:
            byNode[registration.nodeId].append(registration)
    return {node: registrationsDigest(held) for node, held in byNode.items()}
