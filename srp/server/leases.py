"""
Registrations by command (C{srp register}): leases that expire on the reactor's clock.

Every node keeps the same lease table: the active grants each lease and
forwards it to every passive (and the whole table to a passive whose Join
it applies), so the node that takes over already holds every lease, with
the time it has left.  Only the active answers from the table: it puts the
leases in its registry when it becomes active, and takes each one out as it
ends.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import define, evolve
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.authenticator import isLoopback
from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo, Registration, instanceKey
from srp.server.health import (
    LOOPBACK_FOR_WILDCARD,
    CheckSchedule,
    Health,
    HealthMonitor,
    HealthSettings,
)
from srp.server.limits import StateBounds, tallied
from srp.server.registry import Registry
from srp.wire.cluster import (
    FULL,
    REFUSED,
    REGISTERED,
    UNKNOWN,
    Register,
    RegisterAck,
    Unregister,
)

if TYPE_CHECKING:
    from srp.server.membership import Membership
    from srp.server.roles.base import Address

#: The most leases a cluster holds; more are refused, logged and counted.
MAX_LEASES = 1024
#: The longest lease, in seconds (what the wire's milliseconds carry).
MAX_TTL = 0xFFFFFFFF // 1000
#: Ticks after a change of a lease at which the active tells its passives
#: again: a change lost on the way would otherwise stay lost (until a
#: renewal or a Join), and a passive that takes over would answer wrongly.
REPEATS = 2


def leaseId(name: str, priority: int) -> int:
    """
    The node id a lease registers as: the same for a name (any case) and a
    priority wherever it is computed, so that registering again renews the
    lease, and a registration by command never replaces a node's own.
    """
    digest = hashlib.sha256(f"srp lease\0{instanceKey(name)}\0{priority}".encode()).digest()
    return int.from_bytes(digest[:8], "little") | 1


def refusal(log: Logger, counters: Counter[str], name: str, leases: int, limit: int,
            registry: Registry, bounds: StateBounds) -> RegisterAck | None:
    """
    The answer refusing a new registration by command of C{name} when the
    cluster holds C{leases} of at most C{limit}, or C{registry} is at
    C{bounds}' most instances (counted, and logged now and then); None if
    it fits.
    """
    if leases >= limit:
        if tallied(counters, "leases_refused"):
            log.warn("Refused to register {name}: the cluster holds {limit} registrations by "
                     "command (refused {count} times)", name=name, limit=limit,
                     count=counters["leases_refused"])
        return RegisterAck(FULL, reason=f"the cluster holds {limit} registrations by "
                           "command, its limit")
    if len(registry) >= bounds.maxInstances and registry.lookup(name) is None:
        counters["instances_refused"] += 1
        return RegisterAck(REFUSED, reason=f"the cluster holds {bounds.maxInstances} "
                           "instances, its limit")
    return None


def noteGrant(log: Logger, counters: Counter[str], register: Register, source: str,
              renewal: bool) -> None:
    """Count a registration by command granted (or renewed), and log a new one."""
    registration = register.registration
    counters["lease_renewals" if renewal else "leases_granted"] += 1
    if not renewal:
        log.info("Instance {name} registered by {source} at priority {priority}, tcp {tcp}, "
                 "for {ttl}", name=registration.name, source=source,
                 priority=registration.priority, tcp=registration.info.tcp,
                 ttl=f"{register.ttl / 1000:g} s" if register.ttl else "until unregistered")


@define
class Lease:
    """
    One registration by command: what it registers, the address its ports
    are at (empty: the address the client asked), and when it ends
    (reactor seconds; L{None}: when it is unregistered).
    """

    registration: Registration
    host: str
    expires: float | None
    timer: IDelayedCall | None = None
    #: Its health checks, while this node answers for it.
    monitor: HealthMonitor | None = None

    def left(self, now: float) -> int:
        """The milliseconds the lease has left (0 for one without an end)."""
        if self.expires is None:
            return 0
        return max(1, round((self.expires - now) * 1000))


class LeaseTable:
    """
    The leases of a cluster, as one node holds them.

    @ivar serving: whether this node answers from them (it is the active):
        its registry then holds every lease, and it checks their health
        with C{check} and C{health} (L{None}: no checks), as a node checks
        its own instances.
    """

    log = Logger()

    def __init__(self, core: Membership, limit: int = MAX_LEASES) -> None:
        self.core = core
        self.limit = limit
        self.serving = False
        self.check: IHealthCheck | None = None
        self.health = HealthSettings()
        self.schedule = CheckSchedule(core.reactor)
        self._leases: dict[int, Lease] = {}
        #: The active's changes still to be told again: name, priority and
        #: how many more times, by lease id.
        self._repeats: dict[int, tuple[str, int, int]] = {}
        #: The sequence of the active's last message applied for each
        #: lease id: an older one, reordered on the way, is ignored.
        self._applied: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def leases(self) -> Sequence[Lease]:
        """Every lease this node holds."""
        return tuple(self._leases.values())

    def hosts(self) -> dict[int, str]:
        """The address of each lease's ports, by the node id it registers as."""
        return {nodeId: lease.host for nodeId, lease in self._leases.items()}

    def describe(self, nodeId: int) -> dict[str, Any]:
        """
        For status: the seconds lease C{nodeId} has left (L{None}: until
        unregistered) and when its health last changed; nothing if there
        is no such lease.
        """
        lease = self._leases.get(nodeId)
        if lease is None:
            return {}
        now = self.core.reactor.seconds()
        return {"lease": None if lease.expires is None else round(lease.expires - now, 3),
                "by_command": True} | (
            {} if lease.monitor is None else {"since": lease.monitor.health.since})

    def serve(self) -> None:
        """This node is now the active: answer for every lease, and check it."""
        self.serving = True
        for nodeId, lease in self._leases.items():
            self.core.registry.register(lease.registration)
            self._watch(nodeId, lease)

    def unserve(self) -> None:
        """This node no longer answers for the cluster: stop checking."""
        self.serving = False
        for lease in self._leases.values():
            self._unwatch(lease)

    def _watch(self, nodeId: int, lease: Lease) -> None:
        if self.check is None or lease.monitor is not None:
            return
        lease.monitor = HealthMonitor(
            self.core.reactor, lease.registration.name, self.check,
            lambda: self._target(nodeId), self.health,
            lambda _, health: self._healthChanged(nodeId, health), self.core.counters,
            self.schedule)
        lease.monitor.start()

    def _unwatch(self, lease: Lease) -> None:
        if lease.monitor is not None:
            lease.monitor.stop()
            lease.monitor = None

    def _target(self, nodeId: int) -> tuple[str, InstanceInfo]:
        """Where a lease's server is: the registrant's address, or this node's."""
        lease = self._leases[nodeId]
        host = lease.host or self.core.settings.listen[0]
        return LOOPBACK_FOR_WILDCARD.get(host, host), lease.registration.info

    def _healthChanged(self, nodeId: int, health: Health) -> None:
        lease = self._leases.get(nodeId)
        if lease is None or lease.registration.down != health.up:
            return
        lease.registration = evolve(lease.registration, down=not health.up)
        if self.serving:
            self.core.registry.register(lease.registration)

    # -- the active --------------------------------------------------------

    def request(self, message: Register | Unregister, source: Address,
                replyFrom: DatagramProtocol, passives: Sequence[Address]) -> None:
        """
        A registrant asks the active: grant (or renew) or end a lease, tell
        every passive, and answer with a L{RegisterAck}.
        """
        if isinstance(message, Register):
            ack = self._grant(message, source, passives)
        elif self._end(message.instanceName, message.priority, passives):
            self.core.counters["unregistered"] += 1
            self.log.info("Instance {name} (priority {priority}) unregistered by "
                          "{source}", name=message.instanceName, priority=message.priority,
                          source=source[0])
            ack = RegisterAck(REGISTERED)
        else:
            ack = RegisterAck(UNKNOWN, reason=f"{message.instanceName} at priority "
                              f"{message.priority} is not registered by command")
        self.core.send(ack, source, replyFrom)

    def _grant(self, register: Register, source: Address,
               passives: Sequence[Address]) -> RegisterAck:
        core, registration = self.core, register.registration
        nodeId = leaseId(registration.name, registration.priority)
        renewal = nodeId in self._leases
        refused = None if renewal else refusal(
            self.log, core.counters, registration.name, len(self._leases), self.limit,
            core.registry, core.bounds)
        if refused is not None:
            return refused
        host = register.host or ("" if isLoopback(source[0]) else source[0])
        self._keep(evolve(registration, nodeId=nodeId, down=False), register.ttl, host)
        noteGrant(self.log, core.counters, register, source[0], renewal)
        self._changed(registration.name, registration.priority, passives)
        return RegisterAck(REGISTERED, register.ttl)

    def forward(self, lease: Lease, to: Address, sender: DatagramProtocol | None = None
                ) -> None:
        """Tell a passive of C{lease}, with the time it has left."""
        self.core.send(Register(lease.registration, lease.left(self.core.reactor.seconds()),
                                lease.host), to, sender)

    def _end(self, name: str, priority: int, passives: Sequence[Address]) -> bool:
        removed = self.remove(leaseId(name, priority))
        if removed:
            self._changed(name, priority, passives)
        return removed

    def _changed(self, name: str, priority: int, passives: Sequence[Address]) -> None:
        """Tell the passives of a lease as it is now, and again at the next ticks."""
        self._repeats[leaseId(name, priority)] = (name, priority, REPEATS)
        self._tell(name, priority, passives)

    def _tell(self, name: str, priority: int, passives: Sequence[Address]) -> None:
        lease = self._leases.get(leaseId(name, priority))
        for passive in passives:
            if lease is None:
                self.core.send(Unregister(name, priority), passive)
            else:
                self.forward(lease, passive)

    def tick(self, passives: Sequence[Address]) -> None:
        """The active's periodic work: tell the passives of recent changes again."""
        for nodeId, (name, priority, left) in list(self._repeats.items()):
            if left > 1:
                self._repeats[nodeId] = (name, priority, left - 1)
            else:
                del self._repeats[nodeId]
            self._tell(name, priority, passives)

    # -- every node --------------------------------------------------------

    def follow(self, message: Register | Unregister, sequence: int) -> None:
        """
        The active tells this passive of a lease granted, renewed or ended,
        in its message of C{sequence}.
        """
        if isinstance(message, Register):
            registration = message.registration
            nodeId = leaseId(registration.name, registration.priority)
        else:
            nodeId = leaseId(message.instanceName, message.priority)
        if sequence <= self._applied.get(nodeId, -1):
            self.core.counters["lease_messages_reordered"] += 1
            return
        self._applied.pop(nodeId, None)
        self._applied[nodeId] = sequence
        if len(self._applied) > 4 * self.limit:
            del self._applied[next(iter(self._applied))]
        if isinstance(message, Register):
            self._keep(evolve(registration, nodeId=nodeId), message.ttl, message.host)
        else:
            self.remove(nodeId)

    def _keep(self, registration: Registration, ttl: int, host: str) -> None:
        nodeId = registration.nodeId
        old = self._leases.pop(nodeId, None)
        clock = self.core.reactor
        lease = Lease(registration, host, clock.seconds() + ttl / 1000 if ttl else None)
        if old is not None:
            if old.timer is not None and old.timer.active():
                old.timer.cancel()
            if (old.host, evolve(old.registration, down=False)) == (
                    host, evolve(registration, down=False)):
                # A renewal of the same place: its checks go on.
                lease.registration, lease.monitor = old.registration, old.monitor
            else:
                self._unwatch(old)
        if ttl:
            lease.timer = clock.callLater(ttl / 1000, self._expired, nodeId)
        self._leases[nodeId] = lease
        if self.serving:
            self.core.registry.register(lease.registration)
            self._watch(nodeId, lease)

    def _expired(self, nodeId: int) -> None:
        lease = self._leases[nodeId]
        lease.timer = None
        self.core.counters["leases_expired"] += 1
        self.log.info("The registration of {name} (priority {priority}) by command expired",
                      name=lease.registration.name, priority=lease.registration.priority)
        self.remove(nodeId)

    def remove(self, nodeId: int) -> bool:
        """End lease C{nodeId}, if this node holds it; whether it did."""
        lease = self._leases.pop(nodeId, None)
        if lease is None:
            return False
        if lease.timer is not None and lease.timer.active():
            lease.timer.cancel()
        self._unwatch(lease)
        self.core.registry.unregister(lease.registration.name, nodeId)
        return True

    def clear(self) -> None:
        """Forget every lease: this node follows an active that will send its table."""
        for nodeId in list(self._leases):
            self.remove(nodeId)
        self._repeats.clear()
        self._applied.clear()
