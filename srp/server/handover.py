"""
Passing the bound cluster sockets from the old active to the new one on one host.

Only a process of the same user (checked with SO_PEERCRED) gets them.

The old active offers its sockets on an abstract UNIX socket; the new one
connects, receives the file descriptors (SCM_RIGHTS) and reads from the very
sockets the old one was reading.  Datagrams queued in them are not lost,
and no moment passes when the cluster port is closed: a graceful hand-over
drops no client request.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IListeningPort,
    IReactorSocket,
    IReactorUNIX,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.transports.peercred import peerUser


@frozen
class HandedSocket:
    """A received cluster socket: its descriptor and what it is bound to."""

    fd: int
    family: int
    host: str
    port: int


def canHandOver(reactor: Any) -> bool:
    """Whether C{reactor} can pass sockets (real POSIX reactors can; fakes cannot)."""
    return IReactorUNIX.providedBy(reactor) and IReactorSocket.providedBy(reactor)


def _describe(port: IListeningPort) -> list[Any]:
    address = port.getHost()
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET  # type: ignore[attr-defined]
    return [family, address.host, address.port]  # type: ignore[attr-defined]


class _Giver(Protocol):
    log = Logger()

    def __init__(self, ports: Sequence[IListeningPort]) -> None:
        self.ports = ports

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
        line = json.dumps([_describe(p) for p in self.ports]) + "\n"
        self.transport.write(line.encode("ascii"))  # type: ignore[union-attr]


def offerSockets(reactor: Any, name: str, ports: Sequence[IListeningPort]) -> IListeningPort:
    """Listen on the abstract UNIX socket C{name}, giving C{ports} to whoever connects."""
    factory = Factory.forProtocol(lambda: _Giver(ports))
    factory.noisy = False
    listener: IListeningPort = reactor.listenUNIX("\0" + name, factory)
    return listener


_CLOSED = Failure(ConnectionError("the old active closed the hand-over connection"))


@implementer(IFileDescriptorReceiver)
class _Taker(Protocol):
    def __init__(self) -> None:
        self.fds: list[int] = []
        self.buffer = b""
        self.done: Deferred[list[HandedSocket]] = Deferred()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        fcntl.fcntl(descriptor, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self.fds.append(descriptor)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer or self.done.called:
            return
        line = self.buffer.split(b"\n", 1)[0]
        try:
            described = json.loads(line)
            if len(described) != len(self.fds):
                raise ValueError(f"{len(self.fds)} sockets for {len(described)} descriptions")
            handed = [HandedSocket(fd, int(family), str(host), int(port))
                      for fd, (family, host, port) in zip(self.fds, described, strict=True)]
        except (ValueError, TypeError) as e:
            self._fail(Failure(e))
        else:
            self.fds = []
            self.done.callback(handed)
        # The old active may have closed its end already: do not write again.
        self.transport.abortConnection()  # type: ignore[union-attr]

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


def takeSockets(reactor: Any, name: str, timeout: float) -> Deferred[list[HandedSocket]]:
    """Connect to the old active's offer C{name} and receive its sockets."""
    factory = _TakerFactory()
    reactor.connectUNIX("\0" + name, factory, timeout=timeout)
    return factory.taker.done
