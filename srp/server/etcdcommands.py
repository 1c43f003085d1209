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
it is unregistered.  Registrations by command are not health-checked in a
cluster on etcd.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from attrs import evolve
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.authenticator import isLoopback
from srp.etcd.client import EtcdError, deleteOp, putOp
from srp.records import instanceKey
from srp.server.leases import MAX_LEASES, leaseId, noteGrant, refusal
from srp.wire.cluster import REFUSED, REGISTERED, UNKNOWN, Register, RegisterAck, Unregister
from srp.wire.fields import encodeRegistration

if TYPE_CHECKING:
    from srp.server.etcdmember import EtcdMembership


class CommandRegistrations:
    """Takes Register and Unregister at an etcd-backed node and writes them to etcd."""

    log = Logger()

    def __init__(self, member: EtcdMembership, limit: int = MAX_LEASES) -> None:
        self.member = member
        self.limit = limit

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
        node = json.dumps({"addresses": [host] if host else list(member.settings.listen),
                           "port": member.settings.port, "by_command": True}).encode()
        yield client.txn([], [
            putOp(keys.node(nodeId), node, lease),
            putOp(key, encodeRegistration(evolve(registration, nodeId=nodeId, down=False)),
                  lease)])
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
