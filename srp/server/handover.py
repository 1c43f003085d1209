"""
Passing the bound cluster sockets between the nodes of one host.

Only a process of the same user (checked with SO_PEERCRED) gets them.

The old active offers its sockets on an abstract UNIX socket; the new one
connects, receives the file descriptors (SCM_RIGHTS) and reads from the very
sockets the old one was reading.  Datagrams queued in them are not lost,
and no moment passes when the cluster port is closed: a graceful hand-over
drops no client request.  The passives of one host take duplicates the
same way, to fence a hung active (L{srp.server.fencing}).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IListeningPort,
    IReactorSocket,
    IReactorUNIX,
)
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.interfaces import HandedSocket, ISocketSharing, SocketOffer
from srp.transports.peercred import peerUser


def canHandOver(reactor: Any) -> bool:
    """Whether C{reactor} can pass sockets (real POSIX reactors can; fakes cannot)."""
    return IReactorUNIX.providedBy(reactor) and IReactorSocket.providedBy(reactor)


def _describe(port: IListeningPort) -> list[Any]:
    address = port.getHost()
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET  # type: ignore[attr-defined]
    return [family, address.host, address.port]  # type: ignore[attr-defined]


class _Giver(Protocol):
    log = Logger()

    def __init__(self, ports: Sequence[IListeningPort], member: tuple[str, int] | None) -> None:
        self.ports = ports
        self.member = member

    def connectionMade(self) -> None:
        # Abstract sockets have no file mode: anyone on the host may connect.
        # Only a process of this node's own user gets the sockets.
        uid = peerUser(self.transport)
        if uid != os.getuid():
            self.log.warn("Refused the cluster sockets to a process of user {uid}", uid=uid)
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for port in self.ports:
            self.transport.sendFileDescriptor(port.fileno())  # type: ignore[attr-defined,union-attr]
        described: Any = [_describe(p) for p in self.ports]
        if self.member is not None:
            described = {"sockets": described, "member": list(self.member)}
        line = json.dumps(described) + "\n"
        self.transport.write(line.encode("ascii"))  # type: ignore[union-attr]


def offerSockets(reactor: Any, name: str, ports: Sequence[IListeningPort],
                 member: tuple[str, int] | None = None) -> IListeningPort:
    """
    Listen on the abstract UNIX socket C{name}, giving C{ports} to whoever
    connects: one line of JSON describes them (a list of [family, host,
    port]; an object of that list as C{sockets} and C{member} as [host,
    port] when C{member} is given).
    """
    factory = Factory.forProtocol(lambda: _Giver(ports, member))
    factory.noisy = False
    listener: IListeningPort = reactor.listenUNIX("\0" + name, factory)
    return listener


_CLOSED = Failure(ConnectionError("the old active closed the hand-over connection"))


@implementer(IFileDescriptorReceiver)
class _Taker(Protocol):
    def __init__(self) -> None:
        self.fds: list[int] = []
        self.buffer = b""
        self.done: Deferred[SocketOffer] = Deferred()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        fcntl.fcntl(descriptor, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self.fds.append(descriptor)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer or self.done.called:
            return
        line = self.buffer.split(b"\n", 1)[0]
        try:
            offer = self._parse(json.loads(line))
        except (ValueError, TypeError, KeyError) as e:
            self._fail(Failure(e))
        else:
            self.fds = []
            self.done.callback(offer)
        # The old active may have closed its end already: do not write again.
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _parse(self, described: Any) -> SocketOffer:
        member = None
        if isinstance(described, dict):
            host, port = described["member"]
            member, described = (str(host), int(port)), described["sockets"]
        if len(described) != len(self.fds):
            raise ValueError(f"{len(self.fds)} sockets for {len(described)} descriptions")
        return SocketOffer(tuple(HandedSocket(fd, int(family), str(host), int(port))
                                 for fd, (family, host, port) in zip(self.fds, described,
                                                                     strict=True)), member)

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        self._fail(reason)

    def _fail(self, reason: Failure) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if not self.done.called:
            self.done.errback(reason)


class _TakerFactory(ClientFactory):
    def __init__(self) -> None:
        self.taker = _Taker()

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.taker

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.taker._fail(reason)


def takeSockets(reactor: Any, name: str, timeout: float) -> Deferred[SocketOffer]:
    """
    Connect to the offer C{name} and receive what it offers, giving up after
    C{timeout} seconds: a stopped (SIGSTOP) offerer's kernel accepts the
    connection, but nothing comes until it runs again.
    """
    factory = _TakerFactory()
    connector = reactor.connectUNIX("\0" + name, factory, timeout=timeout)
    done = factory.taker.done
    timer = reactor.callLater(timeout, _giveUp, factory.taker, connector)

    def finished(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return done.addBoth(finished)


def _giveUp(taker: _Taker, connector: Any) -> None:
    if taker.transport is not None:
        taker.transport.abortConnection()  # type: ignore[attr-defined]
    else:
        connector.stopConnecting()
    taker._fail(Failure(CancelledError("no sockets came in time")))


@implementer(ISocketSharing)
class HostSocketSharing:
    """Sockets passed between the processes of this host over abstract UNIX sockets."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def offer(self, name: str, ports: Sequence[IListeningPort],
              member: tuple[str, int] | None = None) -> IListeningPort:
        """Offer C{ports}' sockets under C{name} (see L{offerSockets})."""
        return offerSockets(self.reactor, name, ports, member)

    def take(self, name: str, timeout: float) -> Deferred[SocketOffer]:
        """Take the sockets offered under C{name} (see L{takeSockets})."""
        return takeSockets(self.reactor, name, timeout)

    def adopt(self, handed: HandedSocket, protocol: DatagramProtocol,
              maxPacketSize: int) -> IListeningPort:
        """Read C{socket} with C{protocol} on the reactor, and close the received descriptor."""
        try:
            port: IListeningPort = self.reactor.adoptDatagramPort(
                handed.fd, handed.family, protocol, maxPacketSize=maxPacketSize)
        finally:
            os.close(handed.fd)
        return port

    def close(self, handed: HandedSocket) -> None:
        """Close the received descriptor."""
        os.close(handed.fd)


def sharingFor(reactor: Any) -> ISocketSharing | None:
    """
    How C{reactor} passes sockets: a fake reactor may provide
    L{ISocketSharing} itself; a real POSIX reactor uses abstract UNIX
    sockets; others cannot.
    """
    if ISocketSharing.providedBy(reactor):
        sharing: ISocketSharing = reactor
        return sharing
    return HostSocketSharing(reactor) if canHandOver(reactor) else None
