"""
Asking a server something on a connection of its own: a greeting, one
answer, a deadline.

L{Exchange} is the protocol (srp's hello verifier builds on it);
L{prelogin} sends an MS-TDS PRELOGIN naming an instance and returns the
server's PRELOGIN answer, as SQL Server itself confirms names: what the
C{tds} verifier and the C{tds} health check both ask.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from srp.wire.errors import WireError
from srp.wire.tds import TABULAR_RESULT, Prelogin, decodePrelogin, packetLength, preloginRequest


class ExchangeFailed(ConnectError):
    """No whole answer came: none within the deadline, the connection closed, or garbage."""


class Exchange(Protocol):
    """
    Sends C{greeting}, reads a whole answer (L{complete} says how long it
    is) into L{answered}, with a deadline of C{timeout} seconds.

    @param failure: the L{ConnectError} raised when no answer comes.
    """

    def __init__(self, reactor: Any, greeting: bytes, timeout: float,
                 failure: type[ConnectError] = ExchangeFailed) -> None:
        self.reactor = reactor
        self.greeting = greeting
        self.timeout = timeout
        self.failure = failure
        self.buffer = b""
        self.answered: Deferred[bytes] = Deferred()
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.greeting)  # type: ignore[union-attr]
        self._timer = self.reactor.callLater(self.timeout, self._expired)

    def _expired(self) -> None:
        self._fail(self.failure(string=f"no answer within {self.timeout:g} s"))
        self.transport.abortConnection()  # type: ignore[union-attr]

    def complete(self) -> int | None:
        """How many buffered bytes make the whole answer, or None if more are needed."""
        raise NotImplementedError

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        self.buffer += data
        try:
            size = self.complete()
        except WireError as e:
            self._fail(self.failure(string=f"not an answer: {e}"))
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if size is not None:
            self._stopTimer()
            answer, self.buffer = self.buffer[:size], self.buffer[size:]
            self.answered.callback(answer)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._fail(self.failure(string="the connection closed before an answer came"))

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _fail(self, error: Exception) -> None:
        self._stopTimer()
        if not self.answered.called:
            self.answered.errback(error)


class PreloginProbe(Exchange):
    """An L{Exchange} whose answer is one TDS packet."""

    def complete(self) -> int | None:
        if len(self.buffer) < 8:
            return None
        length = packetLength(self.buffer)
        return length if len(self.buffer) >= length else None


async def prelogin(reactor: Any, endpoint: Any, instance: str, timeout: float,
                   failure: type[ConnectError] = ExchangeFailed) -> Prelogin:
    """
    Connect with C{endpoint}, send a PRELOGIN naming C{instance} and return
    the server's PRELOGIN answer; the connection is closed either way.

    @raise ConnectError: if the connection fails; C{failure} if no PRELOGIN
        answer comes within C{timeout} seconds or it is malformed.
    """
    probe = PreloginProbe(reactor, preloginRequest(instance), timeout, failure)
    await endpoint.connect(Factory.forProtocol(lambda: probe))
    try:
        answer = await probe.answered
    finally:
        probe.transport.loseConnection()  # type: ignore[union-attr]
    try:
        return decodePrelogin(answer, TABULAR_RESULT)
    except WireError as e:
        raise failure(string=f"the PRELOGIN answer is malformed: {e}") from None
