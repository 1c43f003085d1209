"""
Transparent fail-over: one logical connection to an instance, whatever
happens to the servers behind it.

L{FailoverClient} keeps a physical connection up with Twisted's
L{ClientService} over any client endpoint; over an L{SRPClientEndpoint},
which provides L{IFailoverEndpoint}, the place of a lost or silent
connection is suspected and tried last: the endpoint races the other places
it knows while it resolves again.  The application's protocol sees one connection throughout:
writes made while no server is reachable are buffered (up to
C{bufferLimit} bytes) and delivered once one is; a protocol that provides
L{IFailoverAware} is told when the connection moved to another place;
C{connectionLost} reaches it only when fail-over gives up, after
C{deadline} seconds without a server, with a reason that says so.

Over an endpoint that learns of moves as they happen (L{IMovingEndpoint}:
C{srp:...:subscribe=yes}), the client moves before the application needs
the connection: an idle one (no answer outstanding) is connected to the new
place first and then swapped in, a busy one is dropped and reconnected there
at once.  Either way the application is told once, as of a fail-over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.client.holding import Held
from srp.interfaces import (
    IFailoverAware,
    IFailoverEndpoint,
    IIdleAware,
    IMoveListener,
    IMovingEndpoint,
)

__all__ = [
    "BufferFull",
    "FailoverClient",
    "FailoverExhausted",
    "IFailoverAware",
    "IIdleAware",
    "LogicalTransport",
    "failoverRetryPolicy",
]

#: Seconds without a server after which fail-over gives up.
DEFAULT_DEADLINE = 30.0
#: Bytes of writes kept while no server is reachable.
DEFAULT_BUFFER_LIMIT = 1 << 20
#: Seconds a peer may stay silent after the application wrote before it is
#: presumed dead (a stopped process, a lost host: no FIN, no RST).
DEFAULT_ANSWER_TIMEOUT = 1.0
#: Seconds a connection busy when a move is pushed may take to be answered
#: before it is dropped for the new place (the request in flight with it).
DEFAULT_MOVE_GRACE = 0.25


class FailoverExhausted(ConnectionLost):
    """No server of the instance could be reached before the deadline."""


class BufferFull(ConnectionLost):
    """The application wrote more than the fail-over buffer holds while no server was reachable."""


def failoverRetryPolicy(attempt: int) -> float:
    """Reconnect at once after a loss, then back off from 50 ms to 1 s."""
    return 0.0 if attempt <= 1 else min(0.05 * 2 ** (attempt - 2), 1.0)


@implementer(ITransport)
class LogicalTransport:
    """The transport the application's protocol sees: one connection across fail-overs."""

    def __init__(self, client: FailoverClient) -> None:
        self.client = client
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        """Send now if a server is connected, else keep for the next one."""
        self.client.send(data)

    def writeSequence(self, data: Any) -> None:
        """Send each piece of C{data}."""
        for piece in data:
            self.write(piece)

    def loseConnection(self) -> None:
        """Close the logical connection: no more fail-over."""
        self.disconnecting = True
        self.client.close()

    def abortConnection(self) -> None:
        """Close at once."""
        self.loseConnection()

    def getPeer(self) -> IAddress:
        """The server connected now (or last)."""
        return self.client.peer

    def getHost(self) -> IAddress:
        """This side of the current (or last) physical connection."""
        return self.client.host


class _Link(Protocol):
    """One physical connection, forwarding to the logical one."""

    def __init__(self, client: FailoverClient) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.linkUp(self)

    def dataReceived(self, data: bytes) -> None:
        self.client.received(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.client.linkDown(self, reason)


@implementer(IStreamClientEndpoint)
class _AdoptingEndpoint:
    """
    What a L{FailoverClient}'s C{ClientService} connects through: the spare
    connection a move made, when one is ready, else the endpoint.
    """

    def __init__(self, client: FailoverClient, endpoint: IStreamClientEndpoint) -> None:
        self.client = client
        self.endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        spare = self.client.takeSpare()
        if spare is None:
            connecting: Deferred[IProtocol] = self.endpoint.connect(protocolFactory)
            return connecting
        assert spare.transport is not None
        protocol = protocolFactory.buildProtocol(spare.transport.getPeer())
        assert protocol is not None
        spare.handTo(protocol)
        return succeed(protocol)


@implementer(IMoveListener)
class FailoverClient:
    """
    Keeps the application's protocol connected to an instance across fail-overs.

    @param endpoint: any client endpoint; one that provides
        L{IFailoverEndpoint} is told which place failed.
    @param protocol: the application's protocol; it is connected once, to a
        L{LogicalTransport}.
    @param answerTimeout: seconds the server may stay silent after a write
        before the connection is presumed dead; L{None} to wait for TCP
        (and then every connection counts as idle for a pushed move).
    @param moveGrace: seconds a connection busy at a pushed move may take
        to be answered before it is dropped for the new place.
    """

    log = Logger()

    def __init__(self, reactor: Any, endpoint: IStreamClientEndpoint, protocol: IProtocol,
                 deadline: float = DEFAULT_DEADLINE,
                 bufferLimit: int = DEFAULT_BUFFER_LIMIT,
                 answerTimeout: float | None = DEFAULT_ANSWER_TIMEOUT,
                 retryPolicy: Callable[[int], float] = failoverRetryPolicy,
                 moveGrace: float = DEFAULT_MOVE_GRACE) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.failoverEndpoint = IFailoverEndpoint(endpoint, None)
        self.movingEndpoint = IMovingEndpoint(endpoint, None)
        #: What the endpoint connects to, for messages.
        self.target = (self.failoverEndpoint.target if self.failoverEndpoint is not None
                       else repr(endpoint))
        self.app = protocol
        self.deadline = deadline
        self.bufferLimit = bufferLimit
        self.answerTimeout = answerTimeout
        self.moveGrace = moveGrace
        self.transport = LogicalTransport(self)
        self.link: _Link | None = None
        self.peer: IAddress = None  # type: ignore[assignment]
        self.host: IAddress = None  # type: ignore[assignment]
        self.buffer: list[bytes] = []
        self.buffered = 0
        #: Moves to another place (a reconnection to the same place is none).
        self.failovers = 0
        #: When each fail-over happened and how long the instance was unreachable.
        self.gaps: list[tuple[float, float]] = []
        #: Moves the cluster pushed that this client carried out.
        self.moves = 0
        #: Writes that had to wait in the buffer: no connection could take them.
        self.waitedWrites = 0
        #: A connection to the instance's new place, ready for the move.
        self._spare: Held | None = None
        #: What was written to the spare connection before it was adopted.
        self._toSpare: list[bytes] = []
        #: When a connection busy at a move is dropped for the spare one.
        self._graceTimer: IDelayedCall | None = None
        #: The connection attempt to the new place, while it runs.
        self._moving: Deferred[IProtocol] | None = None
        self._retryPolicy = retryPolicy
        #: Whether the endpoint tells this client of moves.
        self._listening = False
        self._downSince: float | None = None
        self._deadlineTimer: IDelayedCall | None = None
        self._answerTimer: IDelayedCall | None = None
        self._closing = False
        #: Whether the endpoint was told already that the current link's place is dead.
        self._suspected = False
        self._connected: Deferred[IProtocol] = Deferred()
        self._everConnected = False
        self._ended = False
        self.service = ClientService(_AdoptingEndpoint(self, endpoint),
                                     Factory.forProtocol(lambda: _Link(self)),
                                     retryPolicy=self._retryDelay, clock=reactor)

    def _retryDelay(self, attempt: int) -> float:
        """The retry policy's delay, or none when a move's connection waits to be adopted."""
        return 0.0 if self._spare is not None else self._retryPolicy(attempt)

    def connect(self) -> Deferred[IProtocol]:
        """Start; the L{Deferred} fires with the application's protocol once it is connected."""
        self.service.startService()
        if self.movingEndpoint is not None and not self._listening:
            self._listening = True
            self.movingEndpoint.addMoveListener(self)
        self._startDeadline()
        # Fire once ClientService saw the endpoint's connect complete, so that
        # the endpoint's bookkeeping (connectedTo) is done by then.
        self.service.whenConnected().addCallbacks(self._firstConnection, lambda _: None)
        return self._connected

    def _firstConnection(self, _: object) -> None:
        if not self._connected.called:
            self._connected.callback(self.app)

    def close(self) -> Deferred[None]:
        """End the logical connection: the application gets C{connectionLost} (done)."""
        self._closing = True
        self._stopMoving()
        stopped: Deferred[None] = self.service.stopService()
        if self.link is None:
            self._end(Failure(ConnectionDone("closed by the application")))
        return stopped

    def send(self, data: bytes) -> None:
        """Write C{data} to the server, or buffer it while there is none."""
        if self._closing:
            return
        if self.link is not None and self.link.transport is not None:
            self.link.transport.write(data)
            self._expectAnswer()
            return
        spare = self._spare
        if spare is not None and spare.transport is not None and not spare.lost:
            # The connection about to be adopted: no need to wait for it.
            spare.transport.write(data)
            self._toSpare.append(data)
            self._expectAnswer()
            return
        if self.buffered + len(data) > self.bufferLimit:
            self._closing = True
            self.service.stopService()
            self._end(Failure(BufferFull(
                f"more than {self.bufferLimit} bytes written while no server of "
                f"{self.target} was reachable")))
            return
        self.buffer.append(data)
        self.buffered += len(data)
        self.waitedWrites += 1

    def linkUp(self, link: _Link) -> None:
        """
        A physical connection is up: flush the buffer, and tell the application
        if it goes to another place than the last one.
        """
        self.link = link
        self._suspected = False
        assert link.transport is not None
        previous, self.peer, self.host = self.peer, link.transport.getPeer(), \
            link.transport.getHost()
        if self._deadlineTimer is not None and self._deadlineTimer.active():
            self._deadlineTimer.cancel()
        if not self._everConnected:
            self._everConnected = True
            self.app.makeConnection(self.transport)
        else:
            assert self._downSince is not None
            gap = self.reactor.seconds() - self._downSince
            if self.peer == previous:
                self.log.info("Reconnected to {peer} after {gap:.3f} s", peer=self.peer, gap=gap)
            else:
                self.failovers += 1
                self.gaps.append((self._downSince, gap))
                self.log.info("Failed over to {peer} after {gap:.3f} s", peer=self.peer,
                              gap=gap)
                aware = IFailoverAware(self.app, None)
                if aware is not None:
                    aware.failedOver(previous, self.peer)
        self._downSince = None
        pending, self.buffer, self.buffered = self.buffer, [], 0
        for data in pending:
            link.transport.write(data)
        if pending:
            self._expectAnswer()

    def received(self, data: bytes) -> None:
        """Bytes from the server, for the application."""
        if self._answerTimer is not None and self._answerTimer.active():
            self._answerTimer.cancel()
        self.app.dataReceived(data)
        self._swapIfIdle()

    @property
    def busy(self) -> bool:
        """
        Whether the application awaits an answer: as it says (L{IIdleAware}),
        else whether it wrote and the server has sent nothing since.
        """
        aware = IIdleAware(self.app, None)
        if aware is not None:
            return not aware.idle()
        return self._answerTimer is not None and self._answerTimer.active()

    def instanceMoved(self) -> None:
        """
        The cluster pushed a move: the connection moves to the new place,
        connected there first and swapped in as soon as the current one is
        idle: at once if it is, a busy one once its answer came (no request
        is lost to the move), or, still busy after C{moveGrace} seconds,
        dropped for the new place.
        """
        link = self.link
        if (self._closing or link is None or link.transport is None
                or self._moving is not None or self._spare is not None):
            return
        moving = self._moving = self.endpoint.connect(Factory.forProtocol(Held))
        moving.addCallbacks(self._spareReady, self._spareFailed)

    def _spareReady(self, spare: IProtocol) -> None:
        self._moving = None
        assert isinstance(spare, Held) and spare.transport is not None
        if self._closing or spare.lost or (
                self.link is not None and self.peer == spare.transport.getPeer()):
            # Not needed: a reconnection (the old place failed meanwhile)
            # went to the new place already.
            spare.transport.loseConnection()
            return
        self._spare = spare
        self._swapIfIdle()
        if self._spare is not None:
            self._graceTimer = self.reactor.callLater(self.moveGrace, self._graceOver)

    def _graceOver(self) -> None:
        """Still busy, a while after the move: drop the connection for the new place."""
        self._graceTimer = None
        link = self.link
        if self._spare is None or link is None or link.transport is None:
            return
        self.log.info("{target} moved: dropping {peer}, still busy after {grace} s",
                      target=self.target, peer=self.peer, grace=self.moveGrace)
        self.moves += 1
        self._suspected = True  # the place did not fail: do not try it last
        link.transport.abortConnection()  # type: ignore[attr-defined]

    def _spareFailed(self, reason: Failure) -> None:
        self._moving = None
        if self._closing:
            return
        self.log.warn("{target} moved, but its new place could not be reached ({reason}): "
                      "staying at {peer}", target=self.target, peer=self.peer,
                      reason=reason.getErrorMessage())

    def _swapIfIdle(self) -> None:
        """Move to the spare connection, once the current one is idle."""
        link = self.link
        if self._spare is None or link is None or link.transport is None or self.busy:
            return
        self.log.info("{target} moved: connected to its new place, leaving {peer}",
                      target=self.target, peer=self.peer)
        self.moves += 1
        # Writes from now on go to the spare connection, which ClientService
        # adopts (in this turn or the next) through _AdoptingEndpoint.
        self.link = None
        self._downSince = self.reactor.seconds()
        self._startDeadline()
        link.transport.loseConnection()

    def takeSpare(self) -> Held | None:
        """The connection a move made, for the reconnection to adopt (once)."""
        spare, self._spare = self._spare, None
        written, self._toSpare = self._toSpare, []
        if self._graceTimer is not None and self._graceTimer.active():
            self._graceTimer.cancel()
        self._graceTimer = None
        if spare is None or spare.lost:
            # What was written to it goes to whichever connection comes next.
            self.buffer[:0] = written
            self.waitedWrites += len(written)
            self.buffered += sum(map(len, written))
            return None
        return spare

    def linkDown(self, link: _Link, reason: Failure) -> None:
        """The physical connection is gone: fail over, unless the application closed."""
        if link is not self.link:
            return
        self.link = None
        if self._answerTimer is not None and self._answerTimer.active():
            self._answerTimer.cancel()
        if self._closing:
            self._end(reason)
            return
        self._downSince = self.reactor.seconds()
        if self.failoverEndpoint is not None and not self._suspected \
                and link.transport is not None:
            self.failoverEndpoint.suspect(link.transport)
        self.log.info("Connection to {peer} lost ({reason}); failing over",
                      peer=self.peer, reason=reason.getErrorMessage())
        self._startDeadline()

    def _expectAnswer(self) -> None:
        if self.answerTimeout is None or (
                self._answerTimer is not None and self._answerTimer.active()):
            return
        self._answerTimer = self.reactor.callLater(self.answerTimeout, self._silent)

    def _silent(self) -> None:
        link = self.link
        if link is not None and link.transport is not None:
            self.log.warn("{peer} sent nothing for {timeout} s after a write: presumed dead",
                          peer=self.peer, timeout=self.answerTimeout)
            if self.failoverEndpoint is not None:
                self.failoverEndpoint.suspect(link.transport)
                self._suspected = True
            link.transport.abortConnection()  # type: ignore[attr-defined]

    def _startDeadline(self) -> None:
        if self._deadlineTimer is None or not self._deadlineTimer.active():
            self._deadlineTimer = self.reactor.callLater(self.deadline, self._giveUp)

    def _stopMoving(self) -> None:
        """No more moves: stop listening for them, and drop a move under way."""
        if self.movingEndpoint is not None and self._listening:
            self._listening = False
            self.movingEndpoint.removeMoveListener(self)
        if self._moving is not None:
            self._moving.cancel()
        spare = self.takeSpare()
        if spare is not None and spare.transport is not None:
            spare.transport.loseConnection()

    def _giveUp(self) -> None:
        if self.link is not None:
            return
        self._closing = True
        self.service.stopService()
        reason = FailoverExhausted(
            f"no server of {self.target} could be reached for {self.deadline:g} s")
        if not self._everConnected:
            if not self._connected.called:
                self._connected.errback(reason)
            return
        self._end(Failure(reason))

    def _end(self, reason: Failure) -> None:
        if self._deadlineTimer is not None and self._deadlineTimer.active():
            self._deadlineTimer.cancel()
        self._stopMoving()
        if self._everConnected and not self._ended:
            self._ended = True
            self.app.connectionLost(reason)
