"""
Public test helpers for code that uses srp, in the spirit of C{treq.testing}:
in-memory fakes that need no sockets, processes or wall clock.

L{FakeDatagramTransport} records what a L{DatagramProtocol} sends, so that
responders can be tested without sockets; L{exchange} runs one request
through a protocol and returns its replies.  L{FakeNetwork} is a whole
UDP network on a L{Clock}, with loss, delay, duplication and partitions,
for deterministic tests of clusters; its processes (L{FakeHostReactor})
pass sockets to each other as the nodes of one host do, and can be frozen
and thawed as SIGSTOP and SIGCONT do.  L{SwitchedCheck} is a health check
whose servers a test takes down and brings back.

Real C{srp serve} processes are driven by L{srp.testing.processes}; load
generators live in L{srp.testing.load}, and a PRELOGIN server for the
C{tds} verifier in L{srp.testing.tds}.
"""

from __future__ import annotations

import errno
import random
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import AlreadyCalled, CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

from srp.interfaces import HandedSocket, IHealthCheck, ISocketSharing, SocketOffer
from srp.records import InstanceInfo
from srp.wire.mcsqlr import BROWSER_PORT

#: How many datagrams wait in a fake socket that nobody reads; more are dropped.
SOCKET_QUEUE = 256


class FakeDatagramTransport:
    """
    A datagram transport that keeps what is written instead of sending it.

    C{refuse} may be set to an L{OSError} to make the next writes fail, as a
    full socket buffer would.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = BROWSER_PORT) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.refuse: OSError | None = None
        self._address = (host, port)

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """Record C{datagram} as sent to C{addr}, or raise C{refuse}."""
        if self.refuse is not None:
            raise self.refuse
        self.written.append((datagram, addr))

    def getHost(self) -> tuple[str, int]:
        """The address this transport pretends to be bound to."""
        return self._address

    def stopListening(self) -> None:
        """Nothing to release."""


def connectDatagram(protocol: DatagramProtocol, host: str = "127.0.0.1",
                    port: int = BROWSER_PORT) -> FakeDatagramTransport:
    """Attach a new L{FakeDatagramTransport} to C{protocol} and start it."""
    transport = FakeDatagramTransport(host, port)
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return transport


def exchange(protocol: DatagramProtocol, datagram: bytes,
             source: tuple[str, int] = ("192.0.2.1", 50000)) -> list[bytes]:
    """
    Deliver C{datagram} from C{source} to C{protocol} and return what it sent back.

    The protocol must already be connected with L{connectDatagram}.
    """
    transport = protocol.transport
    assert isinstance(transport, FakeDatagramTransport), "connect it with connectDatagram"
    before = len(transport.written)
    protocol.datagramReceived(datagram, source)
    return [data for data, addr in transport.written[before:] if addr == source]


class FakeSocket:
    """
    A bound UDP socket of a L{FakeNetwork}: the ports reading it, the
    descriptors of it held without reading, and the datagrams waiting in it
    while nobody reads.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.readers: list[FakeUDPPort] = []
        self.held = 0
        self.waiting: deque[tuple[bytes, tuple[str, int]]] = deque()

    @property
    def protocol(self) -> DatagramProtocol | None:
        """The protocol of the port that reads this socket last bound or adopted it."""
        return self.readers[-1].protocol if self.readers else None

    @property
    def bound(self) -> bool:
        """Whether anyone still holds the socket (so its address stays taken)."""
        return bool(self.readers or self.held)


@implementer(IListeningPort)
class FakeUDPPort:
    """A UDP port bound on a L{FakeNetwork}; the transport of its protocol."""

    def __init__(self, network: FakeNetwork, host: str, port: int,
                 protocol: DatagramProtocol, owner: FakeHostReactor | None = None,
                 socket: FakeSocket | None = None) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.protocol = protocol
        self.bound = True
        #: The process that reads through this port (frozen with it).
        self.owner = owner
        #: The socket read.
        self.socket = socket if socket is not None else FakeSocket(host, port)
        self.socket.readers.append(self)

    @property
    def frozen(self) -> bool:
        """Whether the process reading through this port is frozen."""
        return self.owner is not None and self.owner.frozen

    def fileno(self) -> int:
        """No descriptor: sockets are passed by L{FakeHostReactor.offer}."""
        return -1

    def write(self, datagram: bytes, addr: Any) -> None:
        """Send C{datagram} to C{addr} across the network."""
        self.network.send((self.host, self.port), (addr[0], addr[1]), datagram)

    def getHost(self) -> IPv4Address:
        """The address this port is bound to."""
        return IPv4Address("UDP", self.host, self.port)

    def startListening(self) -> None:
        """Already bound when made."""

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Broadcast is not simulated; accepted for compatibility."""

    def stopListening(self) -> Deferred[None]:
        """Stop reading (the socket stays bound while another holds it), and stop the protocol."""
        if self.bound:
            self.bound = False
            self.network.unbind(self)
            self.protocol.doStop()
        return succeed(None)


@implementer(IListeningPort)
class FakeTCPPort:
    """
    A TCP listener on a L{FakeNetwork}: it holds its port, and
    L{FakeNetwork.listeners} shows its factory, but no connection is made.
    """

    def __init__(self, network: FakeNetwork, host: str, port: int,
                 factory: IProtocolFactory) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.factory = factory

    def getHost(self) -> IPv4Address:
        """The address this listener is bound to."""
        return IPv4Address("TCP", self.host, self.port)

    def startListening(self) -> None:
        """Already listening when made."""

    def stopListening(self) -> Deferred[None]:
        """Release the port."""
        if self.network.listeners.get((self.host, self.port)) is self:
            del self.network.listeners[self.host, self.port]
        return succeed(None)


@implementer(IDelayedCall)
class _ProcessCall:
    """A call of a L{FakeHostReactor}: when it falls due while frozen, it waits for the thaw."""

    def __init__(self, reactor: FakeHostReactor, delay: float, f: Callable[..., Any],
                 args: tuple[object, ...], kw: dict[str, object]) -> None:
        self.reactor = reactor
        self.f, self.args, self.kw = f, args, kw
        self.overdue = False
        self.call = reactor.network.clock.callLater(delay, self._due)

    def _due(self) -> None:
        if self.reactor.frozen:
            self.overdue = True
            self.reactor.overdue.append(self)
        else:
            self.run()

    def run(self) -> None:
        self.overdue = False
        self.f(*self.args, **self.kw)

    def getTime(self) -> float:
        return self.call.getTime()

    def cancel(self) -> None:
        if self.overdue:
            self.overdue = False
            self.reactor.overdue.remove(self)
        else:
            self.call.cancel()

    def delay(self, secondsLater: float) -> None:
        if self.overdue:
            raise AlreadyCalled()
        self.call.delay(secondsLater)

    def reset(self, secondsFromNow: float) -> None:
        if self.overdue:
            raise AlreadyCalled()
        self.call.reset(secondsFromNow)

    def active(self) -> bool:
        return self.overdue or self.call.active()


@implementer(IListeningPort)
class _Offer:
    """Sockets a L{FakeHostReactor} offers under a name; listening until it stops."""

    def __init__(self, network: FakeNetwork, key: tuple[str, str], reactor: FakeHostReactor,
                 sockets: Sequence[FakeSocket], member: tuple[str, int] | None) -> None:
        self.network, self.key, self.reactor = network, key, reactor
        self.sockets, self.member = tuple(sockets), member

    def startListening(self) -> None:
        """Already listening when made."""

    def stopListening(self) -> None:
        """Withdraw the offer."""
        if self.network.offers.get(self.key) is self:
            del self.network.offers[self.key]

    def getHost(self) -> IPv4Address:
        """Where the first offered socket is bound (abstract names have no address)."""
        return IPv4Address("UDP", self.sockets[0].host, self.sockets[0].port)


@implementer(IReactorUDP, IReactorTime, ISocketSharing)
class FakeHostReactor:
    """
    What one process of a host of a L{FakeNetwork} sees as its reactor: UDP
    on the network at its host's address, the network's shared clock, and
    passing sockets to the other processes of its host.

    L{freeze} stops it as SIGSTOP does: it receives nothing (datagrams wait
    in its sockets, or go to another process reading the same socket) and
    none of its calls run; L{thaw} lets it run again, as SIGCONT does: it
    reads what waits first, then runs the calls that fell due.
    """

    def __init__(self, network: FakeNetwork, host: str) -> None:
        self.network = network
        self.host = host
        #: Whether the process is frozen.
        self.frozen = False
        #: The calls that fell due while frozen, in order.
        self.overdue: list[_ProcessCall] = []

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        """Bind C{port} (0: an ephemeral one) at this host's address."""
        host = self.host if interface in ("", "0.0.0.0", "::") else interface
        bound = self.network.bind(host, port, protocol, self)
        protocol.makeConnection(bound)  # type: ignore[arg-type]
        return bound

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50,
                  interface: str = "") -> FakeTCPPort:
        """Listen for TCP on C{port} (0: an ephemeral one) at this host's address."""
        host = self.host if interface in ("", "0.0.0.0", "::") else interface
        return self.network.listenTCP(host, port, factory)

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> IDelayedCall:
        """Schedule on the network's clock (held back while frozen)."""
        return _ProcessCall(self, delay, callable, args, kw)

    def freeze(self) -> None:
        """Stop running, as SIGSTOP does."""
        self.frozen = True

    def thaw(self) -> None:
        """Run again, as SIGCONT does: read what waits, then run the calls that fell due."""
        self.frozen = False
        for bound in self.network.portsOf(self):
            self.network.drain(bound.socket)
        while self.overdue and not self.frozen:
            self.overdue.pop(0).run()

    # -- ISocketSharing: the abstract namespace is the host's address.

    def offer(self, name: str, ports: Sequence[IListeningPort],
              member: tuple[str, int] | None = None) -> IListeningPort:
        """Offer the sockets of C{ports} (L{FakeUDPPort}s) under C{name} on this host."""
        key = (self.host, name)
        if key in self.network.offers:
            raise CannotListenError(name, 0, OSError(errno.EADDRINUSE, "Address in use"))
        sockets = [port.socket for port in ports if isinstance(port, FakeUDPPort)]
        offer = self.network.offers[key] = _Offer(self.network, key, self, sockets, member)
        return offer

    def take(self, name: str, timeout: float) -> Deferred[SocketOffer]:
        """Take what is offered under C{name} on this host, after a network delay."""
        offer = self.network.offers.get((self.host, name))
        if offer is None:
            return fail(ConnectionRefusedError(name))
        taken: Deferred[SocketOffer] = Deferred()

        def deliver() -> None:
            if offer.reactor.frozen:
                # Connected, but the offerer does not run: nothing comes.
                self.callLater(timeout, taken.errback, CancelledError("no sockets came"))
            elif self.network.offers.get(offer.key) is not offer:
                taken.errback(ConnectionRefusedError(name))
            else:
                taken.callback(SocketOffer(tuple(self.network.newDescriptor(s)
                                                 for s in offer.sockets), offer.member))

        self.callLater(self.network.random.uniform(*self.network.delay), deliver)
        return taken

    def adopt(self, handed: HandedSocket, protocol: DatagramProtocol,
              maxPacketSize: int) -> IListeningPort:
        """Read the socket of C{handed} with C{protocol}."""
        shared = self.network.closeDescriptor(handed)
        port = FakeUDPPort(self.network, shared.host, shared.port, protocol, self, shared)
        protocol.makeConnection(port)  # type: ignore[arg-type]
        self.network.clock.callLater(0, self.network.drain, shared)
        return port

    def close(self, handed: HandedSocket) -> None:
        """Let go of the socket of C{handed}."""
        shared = self.network.closeDescriptor(handed)
        if not shared.bound:
            self.network.forget(shared)

    def seconds(self) -> float:
        """The network's clock."""
        return self.network.clock.seconds()

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        """Everything scheduled on the network's clock."""
        return self.network.clock.getDelayedCalls()


class FakeNetwork:
    """
    A deterministic UDP network on a L{Clock}, for tests and simulations.

    Datagrams are delayed by a random time within C{delay} (so they can be
    reordered), lost with probability C{loss}, duplicated with probability
    C{duplicate}, and dropped between hosts that L{partition} separates.
    Everything random comes from one seeded generator: a seed replays a run.
    Binding a (host, port) that is bound raises L{CannotListenError}, as
    the operating system does; a socket passed between processes stays
    bound while any of them holds it, and a datagram goes to one of the
    processes that read it and are not frozen.
    """

    def __init__(self, clock: Clock | None = None, seed: int = 0, loss: float = 0.0,
                 duplicate: float = 0.0, delay: tuple[float, float] = (0.0002, 0.002)) -> None:
        self.clock = clock if clock is not None else Clock()
        self.random = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.sent = 0
        self.dropped = 0
        self._ports: dict[tuple[str, int], FakeSocket] = {}
        self._groups: dict[str, int] = {}
        self._nextPort = 40000
        #: Sockets offered for passing, by (host, name).
        self.offers: dict[tuple[str, str], _Offer] = {}
        self._descriptors: dict[int, FakeSocket] = {}
        self._nextDescriptor = 1000
        #: The TCP listeners, by (host, port).
        self.listeners: dict[tuple[str, int], FakeTCPPort] = {}

    def reactor(self, host: str) -> FakeHostReactor:
        """A reactor for a host with address C{host}."""
        return FakeHostReactor(self, host)

    def bind(self, host: str, port: int, protocol: DatagramProtocol,
             owner: FakeHostReactor | None = None) -> FakeUDPPort:
        """Bind (host, port) for C{owner}; port 0 picks a free ephemeral port."""
        if port == 0:
            while (host, self._nextPort) in self._ports:
                self._nextPort += 1
            port = self._nextPort
            self._nextPort += 1
        if (host, port) in self._ports:
            raise CannotListenError(host, port, OSError(errno.EADDRINUSE,
                                                         "Address already in use"))
        bound = FakeUDPPort(self, host, port, protocol, owner)
        self._ports[host, port] = bound.socket
        return bound

    def listenTCP(self, host: str, port: int, factory: IProtocolFactory) -> FakeTCPPort:
        """Listen for TCP on (host, port); port 0 picks a free ephemeral port."""
        while port == 0 and (host, self._nextPort) in self.listeners:
            self._nextPort += 1
        if port == 0:
            port, self._nextPort = self._nextPort, self._nextPort + 1
        if (host, port) in self.listeners:
            raise CannotListenError(host, port, OSError(errno.EADDRINUSE,
                                                         "Address already in use"))
        listener = self.listeners[host, port] = FakeTCPPort(self, host, port, factory)
        return listener

    def unbind(self, port: FakeUDPPort) -> None:
        """C{port} stops reading; its address is released when nobody holds its socket."""
        if port in port.socket.readers:
            port.socket.readers.remove(port)
        if not port.socket.bound:
            self.forget(port.socket)

    def forget(self, shared: FakeSocket) -> None:
        """Release the address of a socket nobody holds any more."""
        if self._ports.get((shared.host, shared.port)) is shared:
            del self._ports[shared.host, shared.port]

    def newDescriptor(self, shared: FakeSocket) -> HandedSocket:
        """A new descriptor of C{shared}, as SCM_RIGHTS passes."""
        self._nextDescriptor += 1
        self._descriptors[self._nextDescriptor] = shared
        shared.held += 1
        return HandedSocket(self._nextDescriptor, socket.AF_INET, shared.host, shared.port)

    def closeDescriptor(self, handed: HandedSocket) -> FakeSocket:
        """Give up the descriptor C{handed}: the socket it was of."""
        shared = self._descriptors.pop(handed.fd)
        shared.held -= 1
        return shared

    def portsOf(self, reactor: FakeHostReactor) -> list[FakeUDPPort]:
        """The ports C{reactor} reads through."""
        return [port for shared in self._ports.values() for port in shared.readers
                if port.owner is reactor]

    def drain(self, shared: FakeSocket) -> None:
        """Let a reader that runs read what waits in C{shared}."""
        while shared.waiting:
            readers = [r for r in shared.readers if not r.frozen]
            if not readers:
                return
            datagram, source = shared.waiting.popleft()
            self._readBy(readers, datagram, source)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network between C{groups} of host addresses (others stay with the first)."""
        self._groups = {host: n for n, group in enumerate(groups) for host in group}

    def heal(self) -> None:
        """Join every partition again."""
        self._groups = {}

    def reachable(self, source: str, destination: str) -> bool:
        """Whether the partition lets C{source} reach C{destination}."""
        return self._groups.get(source, 0) == self._groups.get(destination, 0)

    def send(self, source: tuple[str, int], destination: tuple[str, int],
             datagram: bytes) -> None:
        """Carry C{datagram}, with this network's delay, loss and duplication."""
        self.sent += 1
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            if self.random.random() < self.loss or not self.reachable(source[0],
                                                                      destination[0]):
                self.dropped += 1
                continue
            self.clock.callLater(self.random.uniform(*self.delay), self._deliver, source,
                                 destination, datagram)

    def _deliver(self, source: tuple[str, int], destination: tuple[str, int],
                 datagram: bytes) -> None:
        shared = self._ports.get(destination)
        if shared is None or not self.reachable(source[0], destination[0]):
            self.dropped += 1
            return
        readers = [r for r in shared.readers if not r.frozen]
        if readers:
            self._readBy(readers, datagram, source)
        elif len(shared.waiting) < SOCKET_QUEUE:
            shared.waiting.append((datagram, source))
        else:
            self.dropped += 1

    def _readBy(self, readers: list[FakeUDPPort], datagram: bytes,
                source: tuple[str, int]) -> None:
        reader = readers[0] if len(readers) == 1 else self.random.choice(readers)
        reader.protocol.datagramReceived(datagram, source)


@implementer(IHealthCheck)
class SwitchedCheck:
    """
    An L{IHealthCheck} for servers that exist only in a test: each server
    (a host and a tcp port) is up unless the test switched it off.  Give it
    to L{srp.server.node.NodeService} in C{checks}, under its L{name}.
    """

    name = "switched"

    def __init__(self) -> None:
        #: The servers switched off, as (host, tcp port), with when.
        self.off: dict[tuple[str, int], float] = {}

    def switch(self, host: str, port: int, up: bool, now: float) -> None:
        """Take the server at C{host}:C{port} down, or bring it back, at C{now}."""
        if up:
            self.off.pop((host, port), None)
        else:
            self.off.setdefault((host, port), now)

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None] | None:
        if (host, info.tcp) in self.off:
            raise ConnectionRefusedError(f"{host}:{info.tcp} is switched off")
        return None
