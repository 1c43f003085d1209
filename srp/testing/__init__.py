"""
Public test helpers for code that uses srp, in the spirit of C{treq.testing}:
in-memory fakes that need no sockets, processes or wall clock.

L{FakeDatagramTransport} records what a L{DatagramProtocol} sends, so that
responders can be tested without sockets; L{exchange} runs one request
through a protocol and returns its replies.  L{FakeNetwork} is a whole
UDP network on a L{Clock}, with loss, delay, duplication and partitions,
for deterministic tests of clusters.

Real C{srp serve} processes are driven by L{srp.testing.processes}; load
generators live in L{srp.testing.load}, and a PRELOGIN server for the
C{tds} verifier in L{srp.testing.tds}.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

from srp.wire.mcsqlr import BROWSER_PORT


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


@implementer(IListeningPort)
class FakeUDPPort:
    """A UDP port bound on a L{FakeNetwork}; the transport of its protocol."""

    def __init__(self, network: FakeNetwork, host: str, port: int,
                 protocol: DatagramProtocol) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.protocol = protocol
        self.bound = True

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
        """Unbind, and stop the protocol."""
        if self.bound:
            self.bound = False
            self.network.unbind(self)
            self.protocol.doStop()
        return succeed(None)


@implementer(IReactorUDP, IReactorTime)
class FakeHostReactor:
    """
    What one host of a L{FakeNetwork} sees as its reactor: UDP on the
    network at its address, and the network's shared clock.
    """

    def __init__(self, network: FakeNetwork, host: str) -> None:
        self.network = network
        self.host = host

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        """Bind C{port} (0: an ephemeral one) at this host's address."""
        host = self.host if interface in ("", "0.0.0.0", "::") else interface
        bound = self.network.bind(host, port, protocol)
        protocol.makeConnection(bound)  # type: ignore[arg-type]
        return bound

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> IDelayedCall:
        """Schedule on the network's clock."""
        return self.network.clock.callLater(delay, callable, *args, **kw)

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
    the operating system does.
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
        self._ports: dict[tuple[str, int], FakeUDPPort] = {}
        self._groups: dict[str, int] = {}
        self._nextPort = 40000

    def reactor(self, host: str) -> FakeHostReactor:
        """A reactor for a host with address C{host}."""
        return FakeHostReactor(self, host)

    def bind(self, host: str, port: int, protocol: DatagramProtocol) -> FakeUDPPort:
        """Bind (host, port); port 0 picks a free ephemeral port."""
        if port == 0:
            while (host, self._nextPort) in self._ports:
                self._nextPort += 1
            port = self._nextPort
            self._nextPort += 1
        if (host, port) in self._ports:
            raise CannotListenError(host, port, OSError(errno.EADDRINUSE,
                                                         "Address already in use"))
        bound = self._ports[host, port] = FakeUDPPort(self, host, port, protocol)
        return bound

    def unbind(self, port: FakeUDPPort) -> None:
        """Release C{port}'s address."""
        if self._ports.get((port.host, port.port)) is port:
            del self._ports[port.host, port.port]

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
        port = self._ports.get(destination)
        if port is None or not self.reachable(source[0], destination[0]):
            self.dropped += 1
            return
        port.protocol.datagramReceived(datagram, source)
