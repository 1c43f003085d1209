"""
The server side of the C{hello} verifier: a listener wrapper that confirms
which instance a connection reached, invisibly to the application.

A client that verifies sends a hello (L{srp.wire.hello}) first; the
wrapper answers yes or no and, after a
yes, hands the connection to the application's protocol as if nothing had
happened.  A client that sends anything else reaches the application
directly, bytes and all.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IProtocolFactory
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure

from srp.records import instanceKey
from srp.wire.hello import HELLO_MAGIC, HELLO_NO, HELLO_YES, MAX_HELLO

#: Seconds to wait for the rest of a hello that began like one.
HELLO_TIMEOUT = 5.0


class HelloProtocol(Protocol):
    """Answers a hello, then steps aside for the application's protocol."""

    def __init__(self, factory: HelloFactory, addr: Any) -> None:
        self.factory = factory
        self.addr = addr
        self.buffer = b""
        self.app: Protocol | None = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self.factory.reactor.callLater(HELLO_TIMEOUT, self._handOver, b"")

    def dataReceived(self, data: bytes) -> None:
        if self.app is not None:
            self.app.dataReceived(data)
            return
        self.buffer += data
        if not HELLO_MAGIC.startswith(self.buffer[:len(HELLO_MAGIC)]):
            self._handOver(b"")
            return
        if b"\n" not in self.buffer:
            if len(self.buffer) > MAX_HELLO:
                self.transport.loseConnection()  # type: ignore[union-attr]
            return
        line, rest = self.buffer.split(b"\n", 1)
        name = line[len(HELLO_MAGIC):].decode("ascii", "replace")
        if instanceKey(name) not in self.factory.instances:
            self.factory.refused += 1
            self.transport.write(HELLO_NO)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.buffer = b""
            return
        self.factory.confirmed += 1
        self.transport.write(HELLO_YES)  # type: ignore[union-attr]
        self.buffer = rest
        self._handOver(b"")

    def _handOver(self, _: bytes) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.app is not None:
            return
        app = self.factory.wrapped.buildProtocol(self.addr)
        if app is None:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.app = app
        app.makeConnection(self.transport)
        pending, self.buffer = self.buffer, b""
        if pending:
            app.dataReceived(pending)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.app is not None:
            self.app.connectionLost(reason)


class HelloFactory(ServerFactory):
    """
    Wraps an application's server factory so that its listener answers hellos
    for C{instances}.
    """

    noisy = False

    def __init__(self, wrapped: IProtocolFactory, instances: Collection[str],
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.wrapped = wrapped
        self.instances = {instanceKey(name) for name in instances}
        self.reactor = reactor
        self.confirmed = 0
        self.refused = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        return HelloProtocol(self, addr)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()
