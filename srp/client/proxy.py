"""
C{srp proxy}: fail-over for drivers that are not Twisted.

A proxy listens on a local TCP address and splices each connection it
accepts to the instance's current live place, reached through an C{srp:}
endpoint (L{SRPClientEndpoint}): resolved through the cluster and the
resolver's cache, over the best transport the instance offers, verified.
What the client sends before that connection is up (a driver's PRELOGIN)
is held and delivered.  When the server of an open connection dies, the
client's connection is closed, which is how drivers and pools expect a
fail-over to look; the next connection finds the place that replaced it:
the place whose server closed, or whose client left unanswered (a driver's
timeout on a silent server), is tried last for a while
(L{srp.transports.splice}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import asdict
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from srp.client.endpoint import SRPClientEndpoint, sharedResolver
from srp.client.verifiers import verifierNamed
from srp.interfaces import IInstanceResolver
from srp.records import ProxyRoute
from srp.transports import DEFAULT_PREFERENCE
from srp.transports.splice import SpliceFactory, relayFactory
from srp.wire.mcsqlr import BROWSER_PORT

#: Seconds between two log lines of a proxy's counters (when they changed).
STATS_INTERVAL = 60.0


def proxyFactory(reactor: Any, route: ProxyRoute, resolver: IInstanceResolver) -> SpliceFactory:
    """
    A factory splicing each accepted connection to a new connection to
    C{route}'s instance, made through one C{srp:} endpoint (so through one cache).

    @raise ValueError: if C{route} names a verifier there is none of.
    """
    endpoint = SRPClientEndpoint(
        reactor, route.cluster, route.instance, resolver, addresses=route.addresses,
        prefer=route.prefer or DEFAULT_PREFERENCE,
        verifier=verifierNamed(route.verify, reactor), timeout=route.timeout)
    return relayFactory(endpoint, f"proxy {route.listen} -> {route.target}",
                        route.maxConnections, reactor)


class ProxyService(StreamServerEndpointService):
    """
    One proxy listener: accepts on C{route}'s address, splices to its
    instance, and logs its counters every L{STATS_INTERVAL} seconds when they
    changed, and when it stops.
    """

    log = Logger()

    def __init__(self, reactor: Any, route: ProxyRoute, resolver: IInstanceResolver) -> None:
        endpointType = TCP6ServerEndpoint if ":" in route.host else TCP4ServerEndpoint
        self.factory: SpliceFactory = proxyFactory(reactor, route, resolver)
        super().__init__(endpointType(reactor, route.port, interface=route.host),
                         self.factory)
        self.route = route
        # A listener that cannot bind fails privilegedStartService, for one clear error.
        self._raiseSynchronously = True
        self._logged: dict[str, int] = {}
        self._stats = LoopingCall(self.logStats)
        self._stats.clock = reactor

    def startService(self) -> None:
        super().startService()
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._listening)
        self._stats.start(STATS_INTERVAL, now=False)

    def _listening(self, port: Any) -> Any:
        address = port.getHost()
        self.log.info("{name}: listening on {host}:{port}", name=self.factory.name,
                      host=address.host, port=address.port, target=self.route.target)
        return port

    def logStats(self) -> None:
        """Log the counters, as structured fields, if they changed since last time."""
        counters = asdict(self.factory.stats)
        if counters == self._logged:
            return
        self._logged = counters
        self.log.info("{name}: {accepted} accepted, {spliced} spliced, {failed} failed, "
                      "{refused} refused, {dropped} dropped, {abandoned} abandoned, {open} open, "
                      "{bytesUp} bytes up, {bytesDown} down",
                      name=self.factory.name, **counters)

    def stopService(self) -> Any:
        if self._stats.running:
            self._stats.stop()
        self.logStats()
        return super().stopService()


def proxyServices(reactor: Any, routes: Sequence[ProxyRoute], port: int = BROWSER_PORT,
                  clusterName: str | None = None, key: bytes = b"") -> MultiService:
    """
    A service running a L{ProxyService} for each of C{routes}, all through
    the resolver (and cache) that C{srp:} endpoints share.

    @param port: the UDP port of the clusters.
    @param clusterName: the cluster name, for srp's extended resolve (L{None}:
        whichever cluster the node is in).
    @param key: the cluster key, if the cluster has one.
    @raise ValueError: if a route names a verifier there is none of.
    """
    resolver = sharedResolver(reactor, port, clusterName, key)
    services = MultiService()
    for route in routes:
        try:
            ProxyService(reactor, route, resolver).setServiceParent(services)
        except ValueError as e:
            raise ValueError(f"proxy {route.listen} -> {route.target}: {e}") from None
    return services
