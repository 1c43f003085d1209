"""
The resolver of srp's network access module: C{cluster/instance} to places to connect.

It asks every address of the cluster at once, takes the first good answer,
caches it and answers later resolves from the cache until it expires or is
purged.  It
speaks srp's extended resolve, which lists every live registration of the
instance (primary, then standbys) with the address of its node, and falls
back to plain CLNT_UCAST_INST for a SQL Server Browser that does not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IResolutionReceiver
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.client.browser import canonicalAddress
from srp.interfaces import IInstanceResolver
from srp.records import InstanceInfo, Registration, instanceKey
from srp.wire import InstanceRequest, InstancesResponse, WireError, decodeResponse
from srp.wire.cluster import Resolve, ResolveReply, clusterId, isClusterMessage
from srp.wire.mcsqlr import BROWSER_PORT, MAX_DATAGRAM


class ResolveError(Exception):
    """An instance could not be resolved; the message says why."""


class ClusterSilent(ResolveError):
    """No address of the cluster answered within the deadline."""


class UnknownInstance(ResolveError):
    """The cluster answered that it has no live registration of the instance."""


class MalformedReply(ResolveError):
    """Only malformed replies came back."""


class TooManyResolves(ResolveError):
    """More distinct names are being resolved at once than the resolver allows."""


@frozen
class Candidate:
    """A place where an instance can be reached: its node's address and port map."""

    host: str
    info: InstanceInfo
    priority: int = 0
    nodeId: int = 0
    #: Whether its node's health checks found it dead (srp's extended resolve says).
    down: bool = False


@frozen
class Resolution:
    """
    What a cluster said about an instance: the candidates, best first.

    C{extended} tells whether the answer came from srp's extended resolve
    (every live registration) or plain [MC-SQLR] (the best one only);
    C{cached} whether this answer was served from the cache.
    """

    cluster: str
    instance: str
    candidates: tuple[Candidate, ...]
    extended: bool
    source: str
    cached: bool = False


def candidatesOf(registrations: Sequence[Registration], hosts: Sequence[str],
                 source: str) -> tuple[Candidate, ...]:
    """
    The candidates an extended answer (a ResolveReply or a Notify from
    C{source}) lists: live places first, each group best first.
    """
    # sorted() is stable: the registrations come best first.
    return tuple(sorted(
        (Candidate(host or source, r.info, r.priority, r.nodeId, r.down)
         for r, host in zip(registrations, hosts, strict=True)),
        key=lambda candidate: candidate.down))


@implementer(IResolutionReceiver)
class _AddressCollector:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: object) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if address.host not in self.addresses:
            self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


class _Query(DatagramProtocol):
    """One resolve on the wire: every address, both dialects, retries, the first good answer."""

    noisy = False
    log = Logger()

    def __init__(self, resolver: ClusterResolver, cluster: str, instance: str,
                 addresses: Sequence[str]) -> None:
        self.resolver = resolver
        self.cluster = cluster
        self.instance = instance
        self.addresses = addresses
        self._sources = {canonicalAddress(a) for a in addresses}
        self.done: Deferred[Resolution] = Deferred()
        self.plain: Resolution | None = None
        self.malformed: list[str] = []
        self._timers: list[IDelayedCall] = []
        self.dialect = resolver.dialects.get(cluster)

    def start(self) -> None:
        clock = self.resolver.reactor
        self._timers.append(clock.callLater(self.resolver.timeout, self._deadline))
        # A cluster not heard before is asked the extended way first (srp
        # clusters answer it, with standbys); the plain request follows
        # after extendedGrace, for a SQL Server Browser.
        self._send(plain=self.dialect == "plain", extended=self.dialect != "plain",
                   delay=self.resolver.extendedGrace if self.dialect is None
                   else self.resolver.firstRetry)

    def _send(self, plain: bool, extended: bool, delay: float) -> None:
        requests = []
        if plain:
            requests.append(InstanceRequest(self.instance).encode())
        if extended:
            requests.append(self.resolver.auth.seal(Resolve(self.instance), 0))
        for address in self.addresses:
            for request in requests:
                try:
                    self.transport.write(request, (address, self.resolver.port))  # type: ignore[union-attr]
                except OSError as e:
                    self.log.debug("Cannot send to {address}: {error}", address=address, error=e)
                else:
                    self.resolver.sent += 1
        self._timers.append(self.resolver.reactor.callLater(
            delay, self._send, self.dialect != "extended", self.dialect != "plain",
            min(max(delay, self.resolver.firstRetry) * 2, self.resolver.maxRetry)))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        source = addr[0]
        if canonicalAddress(source) not in self._sources:
            return
        if isClusterMessage(datagram):
            self._extendedReply(datagram, source)
        else:
            self._plainReply(datagram, source)

    def _extendedReply(self, datagram: bytes, source: str) -> None:
        try:
            envelope = self.resolver.auth.open(datagram, source)
        except Rejected as e:
            self.malformed.append(f"{source}: {e}")
            return
        message = envelope.message
        if not isinstance(message, ResolveReply) or instanceKey(
                message.instanceName) != instanceKey(self.instance):
            return
        candidates = candidatesOf(message.registrations, message.hosts, source)
        self.resolver.dialects[self.cluster] = "extended"
        if not candidates:
            self._finish(UnknownInstance(
                f"cluster {self.cluster} has no live registration of {self.instance}"))
        else:
            self._finish(Resolution(self.cluster, self.instance, candidates, True, source))

    def _plainReply(self, datagram: bytes, source: str) -> None:
        try:
            response = decodeResponse(datagram)
        except WireError as e:
            self.malformed.append(f"{source}: {e}")
            return
        if not isinstance(response, InstancesResponse):
            return
        infos = [i for i in response.instances
                 if instanceKey(i.instanceName) == instanceKey(self.instance)]
        if not infos or self.plain is not None:
            return
        self.plain = Resolution(self.cluster, self.instance, (Candidate(source, infos[0]),),
                                False, source)
        if self.dialect == "plain":
            self._finish(self.plain)
        else:
            # An srp cluster answers both; give its extended reply a moment.
            self._timers.append(self.resolver.reactor.callLater(
                self.resolver.extendedGrace, self._plainWins))

    def _plainWins(self) -> None:
        if self.plain is not None and not self.done.called:
            self.resolver.dialects.setdefault(self.cluster, "plain")
            self._finish(self.plain)

    def _deadline(self) -> None:
        if self.plain is not None:
            self._finish(self.plain)
        elif self.malformed:
            self._finish(MalformedReply(
                f"only malformed replies from cluster {self.cluster} for {self.instance}: "
                + "; ".join(self.malformed[:3])))
        else:
            self._finish(ClusterSilent(
                f"no answer from any address of cluster {self.cluster} "
                f"({', '.join(self.addresses)}) port {self.resolver.port} within "
                f"{self.resolver.timeout:g} s for {self.instance}: the instance may be unknown "
                "or hidden, or no srp node or SQL Server Browser listens there"))

    def _finish(self, result: Resolution | ResolveError) -> None:
        if self.done.called:
            return
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if self.transport is not None:
            self.transport.stopListening()
        if isinstance(result, ResolveError):
            self.done.errback(result)
        else:
            self.done.callback(result)


@implementer(IInstanceResolver)
class ClusterResolver:
    """
    Resolves C{cluster/instance} names over UDP, with a cache.

    @param key: the cluster key, for the extended resolve (without it only
        loopback clusters answer it, and others are asked in plain [MC-SQLR]).
    @param clusterName: the cluster's name, for the extended resolve; without
        it, whichever cluster the node is in answers (srp 0.x nodes before
        name-agnostic queries need it).
    @param ttl: seconds a resolution stays in the cache.
    @param timeout: seconds a resolve may take before it fails.
    @param firstRetry: seconds before the first repeat of the requests; each
        repeat waits twice as long, up to C{maxRetry}.
    """

    def __init__(self, reactor: Any, port: int = BROWSER_PORT, timeout: float = 2.0,
                 ttl: float = 30.0, key: bytes = b"", clusterName: str | None = None,
                 firstRetry: float = 0.1, maxRetry: float = 0.8,
                 extendedGrace: float = 0.05, maxPending: int = 4096,
                 maxCached: int = 65536) -> None:
        self.reactor = reactor
        self.port = port
        self.timeout = timeout
        self.ttl = ttl
        self.firstRetry = firstRetry
        self.maxRetry = maxRetry
        self.extendedGrace = extendedGrace
        self.maxPending = maxPending
        self.maxCached = maxCached
        self.auth = ClusterAuthenticator(reactor, clusterId(clusterName), randomNodeId(), key)
        #: Datagrams sent, for those who count them.
        self.sent = 0
        #: Which dialect each cluster answered in: "extended" or "plain".
        self.dialects: dict[str, str] = {}
        self._cache: dict[tuple[str, str], tuple[Resolution, float]] = {}
        self._inflight: dict[tuple[str, str], list[Deferred[Resolution]]] = {}

    def resolve(self, cluster: str, instance: str,
                addresses: Sequence[str] = ()) -> Deferred[Resolution]:
        key = (cluster.lower(), instanceKey(instance))
        cached = self._cache.get(key)
        if cached is not None and self.reactor.seconds() < cached[1]:
            return succeed(cached[0])
        waiter: Deferred[Resolution] = Deferred()
        waiting = self._inflight.get(key)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        if len(self._inflight) >= self.maxPending:
            return fail(TooManyResolves(
                f"{len(self._inflight)} names are being resolved already; try again later"))
        self._inflight[key] = [waiter]
        self._start(key, cluster, instance, addresses)
        return waiter

    def purge(self, cluster: str, instance: str) -> None:
        self._cache.pop((cluster.lower(), instanceKey(instance)), None)

    def _start(self, key: tuple[str, str], cluster: str, instance: str,
               addresses: Sequence[str]) -> None:
        found = succeed(list(addresses)) if addresses else self._addressesOf(cluster)

        def query(resolved: list[str]) -> Deferred[Resolution]:
            if not resolved:
                raise ClusterSilent(f"the cluster name {cluster!r} has no address")
            q = _Query(self, cluster, instance, resolved)
            ipv6 = any(":" in a for a in resolved)
            self.reactor.listenUDP(0, q, interface="::" if ipv6 else "",
                                   maxPacketSize=MAX_DATAGRAM)
            q.start()
            return q.done

        def deliver(result: Resolution | Any) -> None:
            if isinstance(result, Resolution):
                if len(self._cache) >= self.maxCached:
                    self._cache.clear()
                self._cache[key] = (evolve(result, cached=True),
                                    self.reactor.seconds() + self.ttl)
            for waiter in self._inflight.pop(key, []):
                waiter.callback(result) if isinstance(result, Resolution) else waiter.errback(
                    result)

        found.addCallback(query).addBoth(deliver)

    def _addressesOf(self, cluster: str) -> Deferred[list[str]]:
        try:
            return succeed([str(ipaddress.ip_address(cluster))])
        except ValueError:
            pass
        collector = _AddressCollector()
        self.reactor.nameResolver.resolveHostName(collector, cluster, 0)
        return collector.done
