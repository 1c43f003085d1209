"""
The address rule: an address answers only with ports that listen at it.

The active answers [MC-SQLR] requests at its own addresses for every
instance of its cluster.  A registration of a node on another host names a
port that listens on that host, not here; so for each instance answered
with one, the active holds a relay: a TCP listener at each of its
addresses, spliced to the registering node's host and the registration's
tcp port, and answers with the relay's port (tcp only: the np and via
entries of another host are left out).  L{RemoteRelays} keeps the relays in
step with the registry and gives each responder an L{AnsweringView}: the
registry with the relays' ports already in its records, so that the
responder's reply cache stays its fast path.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import evolve
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort
from twisted.logger import Logger
from zope.interface import implementer

from srp.interfaces import IAnswers
from srp.records import InstanceInfo, Registration
from srp.server.registry import Registry
from srp.transports.splice import SpliceFactory
from srp.wire.cluster import Member

#: Listen addresses that stand for every address of the machine.
WILDCARDS = frozenset({"0.0.0.0", "::"})


class _Relay:
    """
    One instance's relay: a listener at each of the active's addresses,
    splicing every connection to where the instance is now (C{target}).
    """

    def __init__(self, reactor: Any, name: str, target: tuple[str, int],
                 addresses: Sequence[str]) -> None:
        self.reactor = reactor
        self.target = target
        self.factory = SpliceFactory(self._backend, f"relay of {name} to another host")
        self.ports: dict[str, IListeningPort] = {}
        try:
            for address in addresses:
                self.ports[address] = reactor.listenTCP(0, self.factory, interface=address)
        except CannotListenError:
            self.close()
            raise

    def _backend(self, peer: IAddress) -> HostnameEndpoint:
        # Read at each connection: a retarget applies to the next one.
        host, port = self.target
        return HostnameEndpoint(self.reactor, host, port)

    def portAt(self, address: str) -> int:
        """The relay's port at C{address}."""
        return int(self.ports[address].getHost().port)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop listening; connections already spliced go on."""
        for port in self.ports.values():
            port.stopListening()
        self.ports = {}


class RemoteRelays:
    """
    The relays an active holds for the instances it answers with a
    registration of a node on another host.

    @param addresses: the active's listen addresses, where relays listen.
    """

    log = Logger()

    def __init__(self, reactor: Any, registry: Registry, addresses: Sequence[str]) -> None:
        self.reactor = reactor
        self.registry = registry
        self.addresses = tuple(addresses)
        #: The nodes on other hosts, by id, with their host address (the
        #: other nodes, and this one, are on this node's host).
        self.hosts: dict[int, str] = {}
        #: The relay of each instance answered from another host, by instance key.
        self.relays: dict[str, _Relay] = {}
        #: The answers that differ from the registry's, by address and instance key.
        self.answers: dict[str, dict[str, Registration]] = {a: {} for a in self.addresses}
        #: The registry generation that C{relays} and C{answers} reflect.
        self.synced = -1
        self._pending: IDelayedCall | None = None
        self._views: list[AnsweringView] = []
        registry.watch(self._changed)

    def view(self, address: str) -> AnsweringView:
        """What a responder at C{address} answers from."""
        view = AnsweringView(self, address)
        self._views.append(view)
        return view

    def passivesAre(self, passives: Iterable[Member]) -> None:
        """The active's passives are now C{passives}: those of other hosts are relayed to."""
        hosts = {p.nodeId: p.host for p in passives if not self._onThisHost(p.host)}
        if hosts != self.hosts:
            self.hosts = hosts
            self.synced = -1
            self._changed()

    def _onThisHost(self, host: str) -> bool:
        """Whether C{host} is an active's address (any of this machine's, for a wildcard)."""
        if host in self.addresses:
            return True
        return any(a in WILDCARDS for a in self.addresses) and _isLocalAddress(host)

    def _changed(self) -> None:
        # Once per reactor turn, however many registrations a Join changed.
        if self._pending is None:
            self._pending = self.reactor.callLater(0, self.sync)

    def sync(self) -> None:
        """Open, retarget and close relays as the registry now says, if it changed."""
        if self._pending is not None:
            if self._pending.active():
                self._pending.cancel()
            self._pending = None
        if self.synced == self.registry.generation:
            return
        self.synced = self.registry.generation
        hosts = self.hosts
        remote = {r.key: (r, hosts[r.nodeId]) for r in self.registry.visible()
                  if r.nodeId in hosts} if hosts else {}
        for key in self.relays.keys() - remote.keys():
            self._close(key)
        answers: dict[str, dict[str, Registration]] = {a: {} for a in self.addresses}
        for key, (registration, host) in remote.items():
            relay = self._relayFor(registration, host)
            for address in self.addresses:
                answers[address][key] = (
                    evolve(registration, hidden=True) if relay is None
                    else _relayed(registration, relay.portAt(address)))
        self.answers = answers
        for view in self._views:
            view.generation = self.synced

    def _relayFor(self, registration: Registration, host: str) -> _Relay | None:
        """The relay of C{registration}'s instance, aimed at it; L{None} if there can be none."""
        key, tcp = registration.key, registration.info.tcp
        if tcp is None:
            self._close(key)
            return None
        target = (host, tcp)
        relay = self.relays.get(key)
        if relay is None:
            try:
                relay = self.relays[key] = _Relay(self.reactor, registration.name, target,
                                                  self.addresses)
            except CannotListenError as e:
                self.log.warn("Cannot open a relay for {instance} (at {host}:{port}): "
                              "{error}; it gets no answer here", instance=registration.name,
                              host=host, port=tcp, error=str(e))
                return None
            self.log.info("Relaying {instance} to {host}:{port} at port {relay}",
                          instance=registration.name, host=host, port=tcp,
                          relay=relay.portAt(self.addresses[0]))
        elif relay.target != target:
            self.log.info("Relay of {instance} now goes to {host}:{port}",
                          instance=registration.name, host=host, port=tcp)
            relay.target = target
        return relay

    def _close(self, key: str) -> None:
        relay = self.relays.pop(key, None)
        if relay is not None:
            relay.close()
            self.log.info("Closed the relay of {key}: answered from this host, or gone",
                          key=key)

    def close(self) -> None:
        """Close every relay: the node no longer answers."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        for key in list(self.relays):
            self._close(key)
        self.answers = {a: {} for a in self.addresses}
        self.hosts = {}
        self.synced = -1


def _isLocalAddress(host: str) -> bool:
    """Whether C{host} is an address of this machine (one a socket can be bound to)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


def _relayed(registration: Registration, port: int) -> Registration:
    """C{registration} as answered through a relay at C{port}: tcp only, no DAC."""
    info = registration.info
    return evolve(registration, dacPort=None, info=InstanceInfo(
        info.serverName, info.instanceName, info.version, info.isClustered, tcp=port))


@implementer(IAnswers)
class AnsweringView:
    """The registry as the responder at C{address} answers from it: relays' ports included."""

    def __init__(self, relays: RemoteRelays, address: str) -> None:
        self.relays = relays
        self.address = address
        #: The registry generation the relays reflect.  A plain attribute,
        #: read for every request: it follows a change of the registry at
        #: the end of the reactor turn that made it, or at the next lookup.
        self.generation = relays.synced

    def _answers(self) -> dict[str, Registration]:
        """The answers here that differ from the registry's, up to date."""
        # The responder stores this lookup's reply for the generation it
        # saw before; the generation that sync() sets clears it next time.
        self.relays.sync()
        return self.relays.answers[self.address]

    def lookup(self, name: str) -> Registration | None:
        """The registry's answer for C{name}, through a relay if it is another host's."""
        answers = self._answers()
        registration = self.relays.registry.lookup(name)
        if registration is None:
            return None
        return answers.get(registration.key, registration)

    def visible(self) -> Sequence[Registration]:
        """What L{lookup} answers for every instance, by name, leaving out hidden ones."""
        answers = self._answers()
        return [r for r in (answers.get(r.key, r) for r in self.relays.registry.visible())
                if not r.hidden]
