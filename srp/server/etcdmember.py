"""
A node of a cluster whose registry and election live in etcd.

Each node writes its registrations (with their health) on a lease of its
own (L{NodeLease}) and keeps a copy of every node's, fed by a watch of the
cluster's prefix (L{PrefixMirror}).  It answers [MC-SQLR] and srp's
extended resolve from that copy alone, so answering never waits on etcd,
and it goes on answering from the last state it saw while etcd is out of
reach (C{stale} in its status).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from attrs import asdict, evolve, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.etcd.access import TLSSettings
from srp.etcd.client import DEFAULT_TIMEOUT, EtcdClient, Event, KeyValue
from srp.etcd.keys import ClusterKeys
from srp.etcd.watch import PrefixMirror
from srp.interfaces import HandedSocket, IClusterBackend
from srp.records import Registration
from srp.server.access import AccessPolicy
from srp.server.etcdcommands import CommandRegistrations
from srp.server.etcdlease import NodeLease
from srp.server.fencing import Fence
from srp.server.handover import sharingFor
from srp.server.leaderport import LeaderPort
from srp.server.leases import leaseId
from srp.server.limits import ReplyLimiter, StateBounds, tallied
from srp.server.membership import ClusterSettings
from srp.server.registry import Registry
from srp.server.responder import ResolutionResponder, ResponderStats
from srp.server.roles.active import ClusterPorts
from srp.server.status import registrationStatus, statusPage
from srp.server.subscriptions import Subscriptions
from srp.wire.cluster import (
    MAX_EPOCH,
    ClusterMessage,
    Register,
    Resolve,
    ResolveReply,
    StatusQuery,
    StatusReply,
    Unregister,
    clusterId,
)
from srp.wire.errors import WireError
from srp.wire.fields import Reader, encodeRegistration, readRegistration
from srp.wire.subscriptions import NotifyAck, Subscribe

#: The default lease TTL, in seconds: how long a dead node's registrations
#: (and leadership) outlive it.
DEFAULT_LEASE_TTL = 2


@frozen
class EtcdSettings:
    """
    Where a node finds etcd and how it uses it.

    @ivar answer: C{"every"}: every node answers at its own addresses;
        C{"leader"}: only the elected leader binds the port (nodes sharing
        one address on one host).
    """

    endpoints: tuple[str, ...]
    leaseTTL: int = DEFAULT_LEASE_TTL
    answer: str = "every"
    timeout: float = DEFAULT_TIMEOUT
    #: etcd's authentication: the user (none: off) and its password.
    user: str | None = None
    password: str = field(default="", repr=False)
    #: How to reach C{https://} endpoints (None: the platform's CAs, no client certificate).
    tls: TLSSettings | None = None


@implementer(IClusterBackend)
class EtcdMembership:
    """
    A node's part in an etcd-backed cluster: its lease and keys, the
    watch-fed copy of every registration, and the ports it answers on.

    L{registry} holds what plain [MC-SQLR] answers name: the registrations
    of the nodes that listen at one of this node's addresses (their ports
    listen where the client asked); L{fleet} holds every registration of
    the cluster, which the extended resolve lists with each node's address.
    """

    log = Logger()

    def __init__(self, reactor: Any, settings: ClusterSettings, etcd: EtcdSettings,
                 registry: Registry, own: Sequence[Registration], stats: ResponderStats,
                 nodeId: int | None = None,
                 onRole: Callable[[str, int], None] | None = None,
                 access: AccessPolicy | None = None, limiter: ReplyLimiter | None = None,
                 client: EtcdClient | None = None, bounds: StateBounds | None = None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.etcd = etcd
        self.registry = registry
        self.fleet = Registry()
        self.stats = stats
        self.nodeId = randomNodeId() if nodeId is None else nodeId
        self.onRole = onRole
        self.access = access if access is not None else AccessPolicy()
        self.limiter = limiter
        #: How much of the others' state the copy keeps ([limits]).
        self.bounds = bounds if bounds is not None else StateBounds()
        self.counters: Counter[str] = Counter()
        self.startedAt: float | None = None
        self.healthSince: dict[str, float] = {}
        self.auth = ClusterAuthenticator(reactor, clusterId(settings.name), self.nodeId,
                                         settings.key)
        self.keys = ClusterKeys(settings.name)
        self.client = client if client is not None else EtcdClient(
            reactor, etcd.endpoints, etcd.timeout, etcd.user, etcd.password, etcd.tls)
        self.lease = NodeLease(self.client, self.keys, self.nodeId, etcd.leaseTTL,
                               self._leading, self._reachability)
        self.mirror = PrefixMirror(self.client, self.keys.root, self._snapshot, self._events,
                                   self._reachability)
        #: Every other node's registrations by instance key, and its addresses.
        self.remote: dict[int, dict[str, Registration]] = {}
        self.addresses: dict[int, tuple[str, ...]] = {}
        #: The leader as etcd last said: (node id, fencing token), or None.
        self.leader: tuple[int, int] | None = None
        #: Whether the copy may be behind etcd (etcd unreachable, or not watched
        #: yet), and since when (reactor seconds).
        self.stale = True
        self.staleSince: float = reactor.seconds()
        #: Where only the leader answers: its port, and the fencing of the host's leader.
        self.port = LeaderPort(
            reactor, Fence(sharingFor(reactor), self.auth.cluster, self.nodeId,
                           settings.listen, settings.port, self.counters, etcd.leaseTTL / 4),
            self._listen, self._adopt, self.counters, etcd.leaseTTL / 4)
        self._ports: ClusterPorts | None = None
        self._stopping = False
        #: The clients subscribed to the changes of the answers, which the
        #: watch-fed copy drives.
        self.subscriptions = Subscriptions(reactor, self.answer, self.send, self.counters)
        self.fleet.watch(self.subscriptions.changed)
        self.own: tuple[Registration, ...] = ()
        self.ownByKey: dict[str, Registration] = {}
        self.commands = CommandRegistrations(self)
        self.setOwn(own)

    @property
    def role(self) -> str:
        """C{active} while this node is the elected leader, else C{passive}."""
        return "active" if self.lease.token is not None else "passive"

    @property
    def epoch(self) -> int:
        """The fencing token while this node leads (0 otherwise), as envelopes carry it."""
        return min(self.lease.token or 0, MAX_EPOCH)

    def setOwn(self, own: Sequence[Registration]) -> None:
        """The instances this node registers: into the local copy at once, and into etcd."""
        self.own = tuple(evolve(r, nodeId=self.nodeId) for r in own)
        self.ownByKey = {r.key: r for r in self.own}
        for registry in (self.registry, self.fleet):
            registry.removeNode(self.nodeId)
            for registration in self.own:
                registry.register(registration)
        node = json.dumps({"addresses": list(self.settings.listen),
                           "port": self.settings.port}).encode()
        self.lease.set({self.keys.node(self.nodeId): node} | {
            self.keys.registration(self.nodeId, r.key): encodeRegistration(r)
            for r in self.own})

    updateOwn = setOwn

    @property
    def ports(self) -> ClusterPorts | None:
        """The port this node answers on now, if any."""
        return self._ports if self.etcd.answer == "every" else self.port.ports

    def start(self) -> None:
        """
        Bind the port (unless only the leader answers), then join etcd.

        @raise CannotListenError: if the port cannot be bound.
        """
        if self.etcd.answer == "every":
            self._ports = self._listen()
        else:
            self.port.start()
        self.lease.start()
        self.mirror.start()
        self.log.info("Cluster {cluster} on etcd {endpoints}, lease TTL {ttl} s",
                      cluster=self.settings.name, endpoints=", ".join(self.etcd.endpoints),
                      ttl=self.etcd.leaseTTL)

    def stop(self) -> Deferred[None]:
        """
        Tell the subscribers that this node's registrations go and that they
        must subscribe again; stop answering and watching, and revoke the
        lease (the keys go with it).
        """
        self.subscriptions.end(self.nodeId)
        self.mirror.stop()
        self.commands.stop()
        self._stopping = True
        stopped = self.lease.stop()
        self.port.stop()
        self.subscriptions.close()
        if self._ports is not None:
            self._ports.release()
            self._ports = None

        def close(result: object) -> Deferred[None]:
            return self.client.close()

        stopped.addBoth(close)
        return stopped

    def _listen(self) -> ClusterPorts:
        return ClusterPorts.bind(self.reactor, self.settings.listen, self.settings.port,
                                 self._responder)

    def _adopt(self, handed: Sequence[HandedSocket]) -> ClusterPorts | None:
        sharing = self.port.fence.sharing
        assert sharing is not None, "only a node that can share sockets receives them"
        return ClusterPorts.adopt(sharing, handed, self.settings.listen, self.settings.port,
                                  self._responder, self.counters)

    def _responder(self, host: str) -> ResolutionResponder:
        """
        The responder on C{host}: every address answers from the same copy.
        Where only the leader answers, it answers only while its lease holds.
        """
        responder = ResolutionResponder(
            self.registry, self.reactor, self.stats,
            cluster=self.received if self.settings.extensions else None,
            access=self.access, limiter=self.limiter)
        if self.etcd.answer == "leader":
            responder.mayAnswer = self.lease.leading
        return responder

    def _leading(self, token: int | None) -> None:
        if self.etcd.answer == "leader":
            if token is None:
                self.subscriptions.close()
                self.port.stepDown()
                self._follow()
            else:
                self.port.lead()
        self.commands.sync()
        self.counters["leaderships" if token is not None else "step_downs"] += 1
        if self.onRole is not None:
            self.onRole(self.role, self.epoch)

    # -- the watch-fed copy ------------------------------------------------

    def _snapshot(self, kvs: Sequence[KeyValue]) -> None:
        for node in list(self.remote):
            self._forget(node)
        self.addresses = {}
        self.leader = None
        self._events([Event(kv) for kv in kvs])
        if self.leader is None:
            self.lease.leaderGone()

    def _events(self, events: Sequence[Event]) -> None:
        for kind, node, instance, event in self.keys.parsed(events):
            if kind == "leader":
                self._leaderEvent(event)
            elif node == self.nodeId:
                continue
            elif kind == "node":
                self._nodeEvent(node, event)
            elif event.deleted:
                if self.remote.get(node, {}).pop(instance, None) is not None:
                    self.registry.unregister(instance, node)
                    self.fleet.unregister(instance, node)
            else:
                self.commands.seen(node, event.kv.lease)
                self._registrationEvent(node, instance, event.kv.value)
        self.commands.sync()
        self._follow()

    def _follow(self) -> None:
        """Where only the leader answers: hold its sockets if it shares this node's address."""
        if self.etcd.answer != "leader" or self.lease.token is not None or self._stopping:
            return
        leader = self.leader[0] if self.leader is not None else 0
        self.port.follow(leader if leader != self.nodeId and self._local(leader) else 0)

    def _registrationEvent(self, node: int, instance: str, value: bytes) -> None:
        try:
            registration = evolve(readRegistration(Reader(value)), nodeId=node)
        except (WireError, ValueError) as e:
            self.counters["etcd_malformed"] += 1
            self.log.warn("Ignoring a malformed registration in etcd for node {node:016x}: "
                          "{error}", node=node, error=e)
            return
        known = self.remote.setdefault(node, {})
        if instance not in known and not self._within(known, registration):
            return
        known[instance] = registration
        self.fleet.register(registration)
        if self._local(node):
            self.registry.register(registration)

    def _within(self, known: dict[str, Registration], registration: Registration) -> bool:
        """Whether a new registration of a node that has C{known} fits the [limits] bounds."""
        if len(known) >= self.bounds.maxRegistrationsPerNode:
            counter = "registrations_refused"
        elif (len(self.fleet) >= self.bounds.maxInstances
              and self.fleet.lookup(registration.name) is None):
            counter = "instances_refused"
        else:
            return True
        if tallied(self.counters, counter):
            self.log.warn("Ignoring {name} of node {node:016x} in etcd: a [limits] bound "
                          "({counter}: {count} times)", name=registration.name,
                          node=registration.nodeId, counter=counter,
                          count=self.counters[counter])
        return False

    def _nodeEvent(self, node: int, event: Event) -> None:
        if event.deleted:
            self._forget(node)
            self.addresses.pop(node, None)
            return
        try:
            self.addresses[node] = tuple(json.loads(event.kv.value)["addresses"])
        except (ValueError, KeyError, TypeError):
            self.counters["etcd_malformed"] += 1
            return
        self.registry.removeNode(node)
        if self._local(node):
            for registration in self.remote.get(node, {}).values():
                self.registry.register(registration)

    def _forget(self, node: int) -> None:
        self.remote.pop(node, None)
        self.registry.removeNode(node)
        self.fleet.removeNode(node)

    def _local(self, node: int) -> bool:
        """Whether node C{node} listens at one of this node's addresses."""
        return bool(set(self.addresses.get(node, ())) & set(self.settings.listen))

    def _leaderEvent(self, event: Event) -> None:
        if event.deleted:
            self.leader = None
            self.lease.leaderGone()
            return
        try:
            self.leader = (int(event.kv.value, 16), event.kv.createRevision)
        except ValueError:
            self.counters["etcd_malformed"] += 1
            return
        self.lease.leaderIs(self.leader[0])

    def staleSeconds(self) -> float:
        """
        Seconds since this node last knew its copy current: 0 while its lease
        is renewed and its watch is open (etcd pushes every change at once).
        """
        return self.reactor.seconds() - self.staleSince if self.stale else 0.0

    def _reachability(self, ok: bool) -> None:
        stale = not (self.lease.reachable and self.mirror.watching)
        if stale == self.stale:
            return
        self.stale = stale
        if stale:
            self.staleSince = self.reactor.seconds()
            self.counters["stale"] += 1
            self.log.warn("etcd is out of reach: answering from the last state seen "
                          "(revision {revision})", revision=self.mirror.revision)
        else:
            self.log.info("etcd reached: answering from revision {revision}",
                          revision=self.mirror.revision)

    # -- srp's extension messages --------------------------------------------

    def received(self, datagram: bytes, source: tuple[str, int],
                 replyFrom: DatagramProtocol) -> None:
        """An extension message arrived on the port: answer status and resolve."""
        if not self.access.cluster.open and not self.access.cluster.permits(source[0]):
            self.counters["denied"] += 1
            return
        try:
            message = self.auth.open(datagram, source[0]).message
        except Rejected as e:
            self.counters[f"rejected_{e.reason}"] += 1
            return
        if isinstance(message, StatusQuery):
            self.send(StatusReply(statusPage(self._summary(), (), self.fleet.registrations(),
                                              message, describe=self._describe)),
                       source, replyFrom)
        elif isinstance(message, Resolve):
            self.send(self.answer(message.instanceName), source, replyFrom)
        elif isinstance(message, (Subscribe, NotifyAck)):
            self.subscriptions.received(message, source, replyFrom)
        elif isinstance(message, (Register, Unregister)):
            self.commands.request(message, source, replyFrom)
        else:
            self.counters["ignored_messages"] += 1

    def answer(self, name: str) -> ResolveReply:
        """What an extended resolve of C{name} is answered (and its subscribers told)."""
        visible = tuple(r for r in self.fleet.candidates(name) if not r.hidden)
        return ResolveReply(name, visible, tuple(self._host(r.nodeId) for r in visible))

    def _host(self, node: int) -> str:
        addresses = self.settings.listen if node == self.nodeId else self.addresses.get(node)
        return addresses[0] if addresses else ""

    def send(self, message: ClusterMessage, to: tuple[str, int],
              sender: DatagramProtocol) -> None:
        """Seal C{message} and send it to C{to} from C{sender}'s port."""
        if sender.transport is None:
            return
        try:
            sender.transport.write(self.auth.seal(message, self.epoch), to)
        except (OSError, WireError):
            self.counters["unsent"] += 1

    def _describe(self, registration: Registration) -> dict[str, Any]:
        described = registrationStatus(registration, self.healthSince.get(registration.key)
                                       if registration.nodeId == self.nodeId else None)
        if leaseId(registration.name, registration.priority) == registration.nodeId:
            described["by_command"] = True
        return described

    def _summary(self) -> dict[str, Any]:
        leader = self.leader
        return {
            "node": f"{self.nodeId:016x}", "cluster": self.settings.name,
            "role": self.role, "epoch": self.epoch, "active": None,
            "backend": "etcd", "stale": self.stale, "revision": self.mirror.revision,
            "stale_seconds": round(self.staleSeconds(), 3),
            "etcd": "unreachable" if not self.lease.reachable else "reachable",
            "etcd_error": None if self.lease.reachable else self.lease.error,
            "leader": None if leader is None else f"{leader[0]:016x}",
            "fencing_token": None if leader is None else leader[1],
            "passives": [], "registrations": [],
            "counters": dict(self.counters) | asdict(self.stats),
        }

    def status(self) -> dict[str, Any]:
        """What this node knows, for C{srp status}."""
        return self._summary() | {
            "registrations": [self._describe(r) for r in self.fleet.registrations()]}
