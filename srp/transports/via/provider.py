"""
The emulated VI provider, its listening ports, and how providers are found.

No VI (Virtual Interface Architecture) hardware exists any more, so
L{EmulatedVIProvider} carries C{via} connections over TCP sockets (or, on one
host, abstract AF_UNIX sockets: L{srp.transports.via.local}) while keeping
VI's contract with the application (L{srp.transports.via.credits}).  It
sits behind L{IVIProvider}, where an RDMA provider could plug in:
L{viProviderNamed} finds srp's own first, then any plugin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import CannotListenError, ConnectError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorUNIX,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IVIProvider
from srp.plugins import namedOrRaise
from srp.transports.via.connection import VIAConnectError, VIAConnection
from srp.transports.via.local import localName, localNames
from srp.wire.errors import WireError
from srp.wire.via import CONNECT, Handshake

#: Receive buffers each side posts unless told otherwise.
DEFAULT_RECEIVES = 16
#: Size of each posted receive buffer unless told otherwise: 64 KiB.
DEFAULT_BUFFER_SIZE = 64 * 1024
#: Bytes a sender queues (waiting for credits) before it pauses its producer.
DEFAULT_SEND_QUEUE = 256 * 1024
#: Seconds a server waits for a client's CONNECT handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a client waits for each path, unless told otherwise.


class _VIAFactory(Factory):
    """
    Builds VIA connections for the application's factory.

    @param pathAddress: on the local path, the TCP address of the path it
        stands for; L{None} on TCP.
    """

    noisy = False

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 factory: IProtocolFactory, pathAddress: IAddress | None = None) -> None:
        self.provider = provider
        self.reactor = reactor
        self.factory = factory
        self.pathAddress = pathAddress


class _VIAClientFactory(_VIAFactory, ClientFactory):
    """
    Builds the VIA connection of one path; on the local path, the
    application's factory and L{VIAConnection.getPeer} see the TCP address
    the path stands for.
    """

    connection: VIAConnection | None = None

    def buildProtocol(self, addr: IAddress | None) -> VIAConnection:
        local = self.pathAddress is not None
        self.connection = VIAConnection(
            self.provider, self.reactor, self.factory, self.pathAddress if local else addr,
            client=True, local=local, pathAddress=self.pathAddress)
        return self.connection

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()


class _VIAServerFactory(_VIAFactory):
    """
    Builds a VIA connection for each connection a listener accepts.  The
    local (AF_UNIX) listener's C{pathAddress} is the TCP listener's address;
    the TCP listener (whose is L{None}) alone starts and stops the
    application's factory.
    """

    def buildProtocol(self, addr: IAddress | None) -> VIAConnection:
        return VIAConnection(self.provider, self.reactor, self.factory, addr, client=False,
                             local=self.pathAddress is not None,
                             pathAddress=self.pathAddress)

    def doStart(self) -> None:
        if self.pathAddress is None:
            self.factory.doStart()

    def doStop(self) -> None:
        if self.pathAddress is None:
            self.factory.doStop()


@implementer(IListeningPort)
class VIAListeningPort:
    """
    A VIA listener: its TCP port and, when it has one, its local path (an
    abstract AF_UNIX socket named L{localName} of the TCP port's address).

    @ivar tcp: the TCP listening port.
    @ivar local: the AF_UNIX listening port, or L{None}.
    """

    def __init__(self, tcp: IListeningPort, local: IListeningPort | None) -> None:
        self.tcp = tcp
        self.local = local

    def __repr__(self) -> str:
        return f"<VIAListeningPort {self.tcp!r} local={self.local!r}>"

    def startListening(self) -> None:
        """Listen again, after L{stopListening}."""
        self.tcp.startListening()
        if self.local is not None:
            self.local.startListening()

    def stopListening(self) -> Deferred[None]:
        """Stop listening on the local path and on TCP; fires when both have stopped."""
        ports = [port for port in (self.local, self.tcp) if port is not None]
        stopped = gatherResults([maybeDeferred(port.stopListening) for port in ports])
        return stopped.addCallback(lambda _: None)

    def getHost(self) -> IAddress:
        """The TCP port's address: what a port map advertises."""
        return self.tcp.getHost()


@implementer(IPlugin, IVIProvider)
class EmulatedVIProvider:
    """
    VI emulated over TCP sockets: message boundaries, credit-based flow
    control and NIC fail-over, without kernel bypass, RDMA or zero copy.
    On one host it takes an AF_UNIX socket instead of TCP, as VI hardware
    takes the loopback path without the network stack.

    @param receives: receive buffers this side posts (1-65535).
    @param bufferSize: bytes in each (1 to 16 MiB): the largest message the
        peer may send.
    @param sendQueue: bytes queued for lack of credits before a registered
        producer is paused; it is resumed below half of that.
    @param handshakeTimeout: seconds a server waits for a client's CONNECT.
    @param local: whether to take the local path: a listener also listens on
        its abstract AF_UNIX socket (L{localName}), and a client tries the
        one of a path whose address is this host's (L{localNames}) before
        TCP.  Only processes of the same user connect that way.
    @raise ValueError: if C{receives} or C{bufferSize} is out of range.
    """

    name = "emulated"
    log = Logger()

    def __init__(self, receives: int = DEFAULT_RECEIVES,
                 bufferSize: int = DEFAULT_BUFFER_SIZE, sendQueue: int = DEFAULT_SEND_QUEUE,
                 handshakeTimeout: float = HANDSHAKE_TIMEOUT, local: bool = True) -> None:
        try:
            Handshake(CONNECT, receives, bufferSize)
        except WireError as e:
            raise ValueError(str(e)) from None
        if sendQueue < 0:
            raise ValueError(f"a send queue of {sendQueue} bytes is negative")
        self.receives = receives
        self.bufferSize = bufferSize
        self.sendQueue = sendQueue
        self.handshakeTimeout = handshakeTimeout
        self.local = local

    def __repr__(self) -> str:
        return (f"EmulatedVIProvider(receives={self.receives}, "
                f"bufferSize={self.bufferSize}, sendQueue={self.sendQueue}, "
                f"local={self.local})")

    def connect(self, reactor: Any, paths: Sequence[tuple[str, int]],
                factory: IProtocolFactory, timeout: float) -> Deferred[IProtocol]:
        """Connect through the first of C{paths} that accepts; see L{IVIProvider.connect}."""
        return Deferred.fromCoroutine(self._connect(reactor, tuple(paths), factory, timeout))

    async def _connect(self, reactor: Any, paths: tuple[tuple[str, int], ...],
                       factory: IProtocolFactory, timeout: float) -> IProtocol:
        if not paths:
            raise VIAConnectError(string="no VIA path to try")
        failures = []
        for host, port in paths:
            try:
                return await self._connectPath(reactor, host, port, factory, timeout)
            except (ConnectError, OSError) as e:
                self.log.info("VIA path {host}:{port} failed: {error}", host=host, port=port,
                              error=e)
                failures.append(f"{host}:{port}: {e}")
        raise VIAConnectError(string=f"no VIA path answered ({'; '.join(failures)})")

    async def _connectPath(self, reactor: Any, host: str, port: int,
                           factory: IProtocolFactory, timeout: float) -> IProtocol:
        """The local path to C{host}:C{port} if there is one, else TCP; C{timeout} for both."""
        deadline = reactor.seconds() + timeout
        unix = IReactorUNIX.providedBy(reactor)
        if self.local and unix:
            address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
            for name in localNames(host, port):
                viaFactory = _VIAClientFactory(self, reactor, factory, address)
                try:
                    return await self._handshake(
                        reactor, UNIXClientEndpoint(
                            reactor, name, timeout=max(0.0, deadline - reactor.seconds())),
                        viaFactory, deadline, f"{host}:{port}", timeout)
                except (ConnectError, OSError) as e:
                    built = viaFactory.connection
                    if (built is not None and built.answered) or reactor.seconds() >= deadline:
                        raise  # the server answered, or the time is up: no second try
                    self.log.debug("VIA path {host}:{port}: no local path ({name!r}: "
                                   "{error}); trying TCP", host=host, port=port,
                                   name=name, error=e)
                    if built is not None:
                        break  # a listener of that name hung up, or is another user's
        kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        remaining = max(0.0, deadline - reactor.seconds())
        return await self._handshake(reactor, kind(reactor, host, port, timeout=remaining),
                                     _VIAClientFactory(self, reactor, factory), deadline,
                                     f"{host}:{port}", timeout)

    async def _handshake(self, reactor: Any, endpoint: IStreamClientEndpoint,
                         viaFactory: _VIAClientFactory, deadline: float, where: str,
                         timeout: float) -> IProtocol:
        """Connect C{endpoint}, then wait until C{deadline} for the server's ACCEPT."""
        connection: VIAConnection = await endpoint.connect(viaFactory)  # type: ignore[assignment]
        timer = reactor.callLater(
            max(0.0, deadline - reactor.seconds()), connection.abandon,
            ConnectTimeoutError(string=f"no VIA ACCEPT from {where} within {timeout:g} s"))
        try:
            return await connection.accepted
        finally:
            if timer.active():
                timer.cancel()

    def listen(self, reactor: Any, port: int, factory: IProtocolFactory,
               interface: str = "") -> IListeningPort:
        """
        Accept VIA connections on TCP C{port} of C{interface}, and on the
        local path (L{localName} of the bound address) unless C{local} is
        off; see L{IVIProvider.listen}.  A local path whose name is taken is
        logged and left out: clients of this host then use TCP.

        @return: a L{VIAListeningPort}.
        """
        tcp: IListeningPort = reactor.listenTCP(
            port, _VIAServerFactory(self, reactor, factory), interface=interface)
        local: IListeningPort | None = None
        unix = IReactorUNIX.providedBy(reactor)
        if self.local and unix:
            bound = tcp.getHost()
            name = localName(bound.host, bound.port)  # type: ignore[attr-defined]
            try:
                local = reactor.listenUNIX(
                    name, _VIAServerFactory(self, reactor, factory, pathAddress=bound))
            except CannotListenError as e:
                self.log.warn("VIA listener {host}:{port} has no local path: {name!r} is "
                              "taken ({error}); clients on this host use TCP",
                              host=bound.host, port=bound.port,  # type: ignore[attr-defined]
                              name=name, error=e)
        return VIAListeningPort(tcp, local)


#: The provider VIA endpoints and listeners use when given none.
DEFAULT_PROVIDER = "emulated"
_BUILTINS = (EmulatedVIProvider(),)


def viProviderNamed(name: str = DEFAULT_PROVIDER) -> IVIProvider:
    """
    The VI provider called C{name}: srp's own (C{emulated}, with its default
    settings), else a plugin's.

    @raise ValueError: if there is none of that name.
    """
    return namedOrRaise(IVIProvider, "VI provider", name, _BUILTINS)
