"""
VIA endpoints: to given paths, to the paths of a port map's C{via} entry,
and the C{via} port-map transport that builds and listens for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IPortMapTransport, IVIProvider, NodeListening
from srp.records import InstanceInfo, ViaAddress, ViaInfo
from srp.transports.via.provider import viProviderNamed

#: Seconds a client waits for each path, unless told otherwise.
DEFAULT_TIMEOUT = 30.0


@implementer(IStreamClientEndpoint)
class VIAClientEndpoint:
    """
    Connects over VIA through the first of C{paths} that accepts.

    @param paths: (NIC address, port) pairs in the order to try them.
    @param timeout: seconds each path may take to connect and accept.
    @param provider: the VI provider (default: the emulated one).
    """

    def __init__(self, reactor: Any, paths: Sequence[tuple[str, int]],
                 timeout: float = DEFAULT_TIMEOUT, provider: IVIProvider | None = None) -> None:
        self.reactor = reactor
        self.paths = tuple(paths)
        self.timeout = timeout
        self.provider = provider if provider is not None else viProviderNamed()

    def __repr__(self) -> str:
        paths = ",".join(f"{host}:{port}" for host, port in self.paths)
        return f"<VIAClientEndpoint {paths} timeout={self.timeout:g}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect C{protocolFactory}'s protocol; fail over from path to path."""
        connected: Deferred[IProtocol] = self.provider.connect(
            self.reactor, self.paths, protocolFactory, self.timeout)
        return connected


@implementer(IStreamServerEndpoint)
class VIAServerEndpoint:
    """
    Accepts VIA connections on C{port} of the NIC whose address is
    C{interface} (every NIC if empty).
    """

    def __init__(self, reactor: Any, port: int, interface: str = "",
                 provider: IVIProvider | None = None) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.provider = provider if provider is not None else viProviderNamed()

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Start listening; fails with C{CannotListenError} if the port is taken."""
        try:
            port: IListeningPort = self.provider.listen(self.reactor, self.port,
                                                        protocolFactory, self.interface)
        except Exception:
            return fail()
        return succeed(port)


def pathsFor(host: str, via: ViaInfo) -> list[tuple[str, int]]:
    """
    The (address, port) pairs of a port map's VIA entry, in order.

    A NIC is the IPv4 address of the NIC; a numeric NIC such as C{0} means
    "a NIC of the candidate's host" and becomes C{host}.  Repeats are dropped.
    """
    paths: list[tuple[str, int]] = []
    for address in via.addresses:
        path = (host if address.nic.isdigit() else address.nic, address.port)
        if path not in paths:
            paths.append(path)
    return paths


@implementer(IPlugin, IPortMapTransport)
class VIATransport:
    """
    The C{via} entry of a port map: C{NETBIOS,NIC:PORT[,NIC:PORT...]}.

    A client tries its paths in order (L{pathsFor}); a node listens on one
    port of its listen address with the VI provider its configuration names.
    """

    name = "via"

    def endpointFor(self, reactor: Any, host: str, info: InstanceInfo,
                    timeout: float) -> IStreamClientEndpoint | None:
        """A VIA endpoint to C{info}'s via paths on C{host}, or L{None} if it has none."""
        if info.via is None:
            return None
        return VIAClientEndpoint(reactor, pathsFor(host, info.via), timeout=timeout)

    def listen(self, reactor: Any, info: InstanceInfo, factory: IProtocolFactory,
               node: NodeListening) -> tuple[IListeningPort, InstanceInfo]:
        """
        Listen on the port of C{info}'s first via path (any if none) of the
        node's address; advertise it as the one path, whose NIC is that
        address (C{0}, the candidate's host, when the node listens on every
        address or on IPv6, which a NIC cannot name).
        """
        nic = "0" if node.host in ("0.0.0.0", "::") or ":" in node.host else node.host
        wanted = info.via.addresses[0].port if info.via else 0
        port = viProviderNamed(node.viProvider).listen(reactor, wanted, factory, node.host)
        bound = ViaInfo(info.serverName, (ViaAddress(nic, port.getHost().port),))
        return port, evolve(info, via=bound)


#: A VIA endpoint to C{info}'s via paths on C{host}, or L{None}: L{VIATransport.endpointFor}.
endpointFor = VIATransport().endpointFor
