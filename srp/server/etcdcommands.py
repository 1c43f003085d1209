"""
Registrations by command (C{srp register}) in a cluster on etcd.

There is no active to forward to: whichever node a Register or an
Unregister reaches writes it to etcd and answers once etcd has it; every
node's watch then brings it into its copy like any node's registrations.
A registration by command is stored as if a node of its own (id
L{leaseId <srp.server.leases.leaseId>}, from its name and priority)
registered it: a node key with the address its ports are at (the
registrant's, or the address of the node it asked) and the registration's
key.  Both are on an etcd lease of their own, of the TTL asked for (whole
seconds, rounded up), granted anew at each renewal (the old lease is then
revoked), so the registration lives as long as its registrant renews it,
whichever node it asks, and outlives the node that took it.  One
registered for no time (C{--ttl 0}) is on no lease: it stays in etcd until
it is unregistered.

The elected leader checks the health of every registration by command, as
a UDP cluster's active does, and writes each change to etcd (on the
registration's lease); a renewal of the same place keeps the health etcd
holds.
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import TYPE_CHECKING, Any

from attrs import evolve
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.authenticator import isLoopback
from srp.etcd.client import EtcdError, KeyValue, deleteOp, putOp
from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo, Registration, instanceKey
from srp.server.health import (
    LOOPBACK_FOR_WILDCARD,
    CheckSchedule,
    Health,
    HealthMonitor,
    HealthSettings,
)
from srp.server.leases import MAX_LEASES, leaseId, noteGrant, refusal
from srp.wire.cluster import REFUSED, REGISTERED, UNKNOWN, Register, RegisterAck, Unregister
from srp.wire.errors import WireError
from srp.wire.fields import Reader, encodeRegistration, readRegistration

if TYPE_CHECKING:
    from srp.server.etcdmember import EtcdMembership


def _wasDown(before: list[KeyValue], nodeId: int, registration: Registration) -> bool:
    """Whether C{registration} renews the one etcd holds (C{before}) and that one is down."""
    if not before:
        return False
    try:
        old = readRegistration(Reader(before[0].value))
    except (WireError, ValueError):
        return False
    same = evolve(old, nodeId=nodeId, down=False) == evolve(registration, nodeId=nodeId,
                                                              down=False)
    return same and old.down


class CommandRegistrations:
    """
    Takes Register and Unregister at an etcd-backed node and writes them to
    etcd; while the node leads, checks them with C{check} (None: no checks).
    """

    log = Logger()

    def __init__(self, member: EtcdMembership, limit: int = MAX_LEASES) -> None:
        self.member = member
        self.limit = limit
        self.check: IHealthCheck | None = None
        self.health = HealthSettings()
        self.schedule = CheckSchedule(member.reactor)
        #: The etcd lease of each registration by command, as the watch saw it.
        self.leases: dict[int, int] = {}
        self.monitors: dict[int, HealthMonitor] = {}

    def seen(self, node: int, lease: int) -> None:
        """The watch saw node C{node}'s registration, on etcd lease C{lease}."""
        self.leases[node] = lease

    def sync(self) -> None:
        """
        Check every registration by command while this node leads (none
        otherwise), and write again the health of any that etcd holds
        otherwise than its check says (a write lost to a renewal's new lease).
        """
        for node in set(self.leases) - set(self.member.remote):
            del self.leases[node]
        wanted = self.byCommand() if self.check is not None and \
            self.member.lease.token is not None else set()
        for node in set(self.monitors) - wanted:
            self.monitors.pop(node).stop()
        for node in wanted:
            registration = self._registration(node)
            if registration is None or self.check is None:
                continue
            monitor = self.monitors.get(node)
            if monitor is not None:
                self._healthChanged(node, registration.name, monitor.health)
                continue
            monitor = self.monitors[node] = HealthMonitor(
                self.member.reactor, registration.name, self.check,
                partial(self._target, node), self.health, partial(self._healthChanged, node),
                self.member.counters, self.schedule)
            # A new leader goes on from the health etcd holds.
            monitor.health = Health(not registration.down, self.member.reactor.seconds())
            monitor.start()

    def stop(self) -> None:
        """Stop every check."""
        for monitor in self.monitors.values():
            monitor.stop()
        self.monitors.clear()

    def _registration(self, node: int) -> Registration | None:
        return next(iter(self.member.remote.get(node, {}).values()), None)

    def _target(self, node: int) -> tuple[str, InstanceInfo]:
        """Where a registration's server is (raises, a failed check, if it is gone)."""
        registration = self._registration(node)
        assert registration is not None
        host = self.member.addresses[node][0]
        return LOOPBACK_FOR_WILDCARD.get(host, host), registration.info

    def _healthChanged(self, node: int, name: str, health: Health) -> None:
        registration = self._registration(node)
        if registration is None or registration.down != health.up:
            return
        key = self.member.keys.registration(node, registration.key)
        value = encodeRegistration(evolve(registration, down=not health.up))
        written = self.member.client.put(key, value, self.leases.get(node, 0))
        written.addErrback(lambda f: self.log.warn(
            "Could not write the health of {name} to etcd: {error}",
            name=registration.name, error=f.getErrorMessage()))

    def byCommand(self) -> set[int]:
        """The ids of the registrations by command the watch-fed copy holds."""
        return {node for node, registrations in self.member.remote.items()
                if any(leaseId(r.name, r.priority) == node for r in registrations.values())}

    def request(self, message: Register | Unregister, source: tuple[str, int],
                replyFrom: DatagramProtocol) -> Deferred[None]:
        """Apply C{message} in etcd, then answer C{source} with a L{RegisterAck}."""
        done: Deferred[Any] = self._register(message, source) \
            if isinstance(message, Register) else self._unregister(message, source)

        def unanswered(failure: Failure) -> RegisterAck:
            failure.trap(EtcdError)
            self.member.counters["commands_unwritten"] += 1
            return RegisterAck(REFUSED, reason=f"etcd did not take it: "
                               f"{failure.getErrorMessage()}")

        done.addErrback(unanswered)
        done.addCallback(self.member.send, source, replyFrom)
        return done

    @inlineCallbacks
    def _register(self, register: Register, source: tuple[str, int]) -> Any:
        member, registration = self.member, register.registration
        nodeId = leaseId(registration.name, registration.priority)
        renewal = nodeId in member.remote
        refused = None if renewal else refusal(
            self.log, member.counters, registration.name, len(self.byCommand()), self.limit,
            member.fleet, member.bounds)
        if refused is not None:
            return refused
        keys, client = member.keys, member.client
        key = keys.registration(nodeId, registration.key)
        _, before = yield client.range(key)
        lease = 0
        if register.ttl:
            lease, _ = yield client.grant(math.ceil(register.ttl / 1000))
        host = register.host or ("" if isLoopback(source[0]) else source[0])
        addresses = [host] if host else list(member.settings.listen)
        node = json.dumps({"addresses": addresses, "port": member.settings.port,
                           "by_command": True}).encode()
        samePlace = member.addresses.get(nodeId) == tuple(addresses)
        stored = evolve(registration, nodeId=nodeId,
                        down=samePlace and _wasDown(before, nodeId, registration))
        yield client.txn([], [putOp(keys.node(nodeId), node, lease),
                              putOp(key, encodeRegistration(stored), lease)])
        if before and before[0].lease not in (0, lease):
            yield client.revoke(before[0].lease)
        noteGrant(self.log, member.counters, register, source[0], renewal)
        return RegisterAck(REGISTERED, register.ttl)

    @inlineCallbacks
    def _unregister(self, message: Unregister, source: tuple[str, int]) -> Any:
        member = self.member
        nodeId = leaseId(message.instanceName, message.priority)
        key = member.keys.registration(nodeId, instanceKey(message.instanceName))
        _, before = yield member.client.range(key)
        if not before:
            return RegisterAck(UNKNOWN, reason=f"{message.instanceName} at priority "
                               f"{message.priority} is not registered by command")
        yield member.client.txn([], [deleteOp(key), deleteOp(member.keys.node(nodeId))])
        if before[0].lease:
            yield member.client.revoke(before[0].lease)
        member.counters["unregistered"] += 1
        self.log.info("Instance {name} (priority {priority}) unregistered by {source}",
                      name=message.instanceName, priority=message.priority, source=source[0])
        return RegisterAck(REGISTERED)
