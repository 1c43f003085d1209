"""
Credit-based flow control: the side of a VIA connection its application sees.

Each side posts C{receives} buffers of C{bufferSize} bytes; the peer may send
one message per credit, never larger than a buffer, and a credit comes back
(a CREDIT frame) once the application has consumed the message.  A sender
without credits queues locally and pauses its producer.  L{CreditedTransport}
keeps both halves of that bargain; L{srp.transports.via.connection} puts it on
a socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IProducer, IProtocol, ITransport
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from srp.transports.writethrough import writeThrough
from srp.wire.via import CREDIT, DATA, FRAME_HEADER, Close, Handshake

if TYPE_CHECKING:
    import socket

    from srp.transports.via.provider import EmulatedVIProvider


class IMessageReceiver(Interface):
    """
    A protocol that receives whole VIA messages instead of a byte stream.

    A protocol that provides it gets L{messageReceived} instead of
    C{dataReceived}.
    """

    def messageReceived(message: bytes) -> None:
        """One message, exactly as the peer sent it (possibly empty)."""


class IMessageTransport(ITransport):
    """The transport a VIA connection gives its protocol: it also sends whole messages."""

    maxMessageSize = Attribute("The largest message the peer accepts: its posted buffer size.")
    credits = Attribute("How many messages may be sent now, before the peer returns credits.")
    queuedBytes = Attribute("Bytes written but not yet sent, for lack of credits.")

    def sendMessage(message: bytes) -> None:
        """
        Send C{message} as one message: the peer receives it whole.

        @raise ValueError: if it is longer than L{maxMessageSize}.
        """


class CreditedTransport:
    """
    The application's transport on a VIA connection: messages delivered as
    the application consumes them (returning their credits), and messages
    sent as the peer's credits allow (queueing the rest).

    As a producer, L{pauseProducing} stops delivering messages, and so stops
    returning credits: the peer stalls once it has filled every posted
    receive.  As a consumer, it pauses a registered producer while more than
    the provider's C{sendQueue} bytes wait for credits.

    The connection underneath (L{srp.transports.via.connection.VIAConnection})
    sets C{_tcp}, C{_socket}, C{peer} and C{app}, and says when it has
    stopped (L{_stopped}) and how it closes (L{_closeWith}).
    """

    def __init__(self, provider: EmulatedVIProvider, reactor: Any) -> None:
        self.provider = provider
        self.reactor = reactor
        self.app: IProtocol | None = None
        self.peer: Handshake | None = None
        self._tcp: Any = None
        self._socket: socket.socket | None = None
        # Sending: credits the peer gave us and what waits for more.
        self.credits = 0
        self.maxMessageSize = 0
        self.queuedBytes = 0
        self._queue: deque[bytes | bytearray | memoryview] = deque()
        #: The registered producer: an IPushProducer if streaming, else an IPullProducer.
        self._producer: Any = None
        self._streaming = False
        self._producerPaused = False
        self._pullCall: IDelayedCall | None = None
        # Receiving: messages not yet delivered, credits not yet returned.
        self._received: deque[bytes] = deque()
        self._peerCredits = provider.receives
        self._toReturn = 0
        #: Credits are returned (in one CREDIT frame) once this many messages
        #: have been consumed: half the receives posted, so that the peer,
        #: which still holds the other half, never waits for them.
        self.creditBatch = max(1, provider.receives // 2)
        self._messages = False
        self._paused = False
        self._delivering = False
        # Closing, as far as the application is concerned.
        self.disconnecting = False
        self._closeSent = False
        self._aborted = False
        self._lost = False
        self._appLost = False
        self._pendingLoss: Failure | None = None

    def _stopped(self) -> bool:
        """Whether the connection has stopped carrying frames."""
        raise NotImplementedError

    def _closeWith(self, close: Close) -> None:
        """Send C{close} (once) and close the connection underneath."""
        raise NotImplementedError

    def loseConnection(self) -> None:
        """Send what is queued (as credits allow), then close in order."""
        raise NotImplementedError

    # Receiving, for the application.

    @property
    def pendingMessages(self) -> int:
        """Messages received but not yet delivered (at most the receives posted)."""
        return len(self._received)

    def _deliver(self) -> None:
        """
        Hand queued messages to the application, then return their credits
        once there are L{creditBatch} of them to return.
        """
        if self._delivering:
            return
        self._delivering = True
        try:
            while (self._received and not self._paused and self.app is not None
                   and not self._appLost and not self._aborted):
                message = self._received.popleft()
                self._toReturn += 1
                if self._messages:
                    self.app.messageReceived(message)  # type: ignore[attr-defined]
                elif message:
                    self.app.dataReceived(message)
        finally:
            self._delivering = False
        if (self._toReturn >= self.creditBatch and not self._stopped()
                and not self._closeSent):
            count, self._toReturn = self._toReturn, 0
            self._peerCredits += count
            self._send([FRAME_HEADER.pack(CREDIT, count)])
        if (self._pendingLoss is not None and not self._received and not self._appLost
                and self.app is not None):
            self._appLost = True
            self.app.connectionLost(self._pendingLoss)

    def pauseProducing(self) -> None:
        """Deliver no more messages, and so return no credits, until resumed."""
        self._paused = True

    def resumeProducing(self) -> None:
        """Deliver the messages that wait, return their credits, and go on."""
        self._paused = False
        self._deliver()

    def stopProducing(self) -> None:
        """Close the connection."""
        self.loseConnection()

    # Sending, for the application.

    def _send(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """
        Ring the doorbell: hand the frames in C{parts} to the kernel at once,
        in one C{sendmsg} that gathers them without copying, when nothing
        waits in the transport's buffer (not on the reactor's next turn).
        What the socket does not take goes through the transport's C{write},
        which sends it in order (and finds out about a broken connection).
        """
        if self._aborted:
            return
        writeThrough(self._tcp, self._socket, parts)

    def _writable(self) -> bool:
        return self.peer is not None and not self.disconnecting and not self._stopped()

    def write(self, data: bytes) -> None:
        """Send C{data} as a stream: cut into messages of at most L{maxMessageSize} bytes."""
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if not data or not self._writable():
            return
        limit = self.maxMessageSize
        size = len(data)
        if not self._queue and self.credits > 0:
            # Nothing waits: send what the credits allow now, in one write.
            if size <= limit:
                self.credits -= 1
                self._send([FRAME_HEADER.pack(DATA, size), data])
                if self._producer is not None:
                    self._afterSend()
                return
            view = memoryview(data)
            count = min(self.credits, -(-size // limit))
            parts: list[bytes | memoryview] = []
            for start in range(0, count * limit, limit):
                piece = view[start:start + limit]
                parts += (FRAME_HEADER.pack(DATA, len(piece)), piece)
            self.credits -= count
            self._send(parts)
            offset = min(size, count * limit)
            if offset == size:
                if self._producer is not None:
                    self._afterSend()
                return
        else:
            view = memoryview(data)
            offset = 0
            if self._queue and isinstance(self._queue[-1], bytearray):
                # Stream bytes that wait for a credit may share one message.
                tail = self._queue[-1]
                piece = view[:max(0, limit - len(tail))]
                tail += piece
                offset = len(piece)
                self.queuedBytes += offset
        while offset < size:
            piece = view[offset:offset + limit]
            offset += len(piece)
            self.queuedBytes += len(piece)
            # A whole message is a view of C{data} (bytes do not change): no copy.
            self._queue.append(piece if len(piece) == limit else bytearray(piece))
        self._flush()
        self._pauseProducerIfFull()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Send the concatenation of C{data} as a stream."""
        self.write(b"".join(data))

    def sendMessage(self, message: bytes) -> None:
        """Send C{message} as one message: the peer receives it whole."""
        if len(message) > self.maxMessageSize:
            raise ValueError(f"a message of {len(message)} bytes exceeds the "
                             f"{self.maxMessageSize}-byte receive buffers the peer posted")
        if not self._writable():
            return
        if not self._queue and self.credits > 0:
            self.credits -= 1
            self._send([FRAME_HEADER.pack(DATA, len(message)), message])
            if self._producer is not None:
                self._afterSend()
            return
        self._queue.append(bytes(message))
        self.queuedBytes += len(message)
        self._flush()
        self._pauseProducerIfFull()

    def _flush(self) -> None:
        """Send queued messages while there are credits for them, in one write."""
        if self.peer is None or self._stopped():
            return
        if self.credits > 0 and self._queue:
            count = min(self.credits, len(self._queue))
            parts: list[bytes | bytearray | memoryview] = []
            for _ in range(count):
                payload = self._queue.popleft()
                self.queuedBytes -= len(payload)
                parts += (FRAME_HEADER.pack(DATA, len(payload)), payload)
            self.credits -= count
            self._send(parts)
        self._afterSend()

    def _afterSend(self) -> None:
        """Close once the queue is sent, if asked to; let a producer go on."""
        if self.disconnecting and not self._queue:
            self._closeWith(Close())
        elif self._producer is not None and self.queuedBytes <= self.provider.sendQueue // 2:
            if self._streaming:
                if self._producerPaused:
                    self._producerPaused = False
                    self._producer.resumeProducing()
            elif self._pullCall is None:
                self._pullCall = self.reactor.callLater(0, self._pull)

    def _pauseProducerIfFull(self) -> None:
        if (self._producer is not None and self._streaming and not self._producerPaused
                and self.queuedBytes > self.provider.sendQueue):
            self._producerPaused = True
            self._producer.pauseProducing()

    def _pull(self) -> None:
        self._pullCall = None
        if self._producer is not None and not self._streaming:
            self._producer.resumeProducing()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Let C{producer} write to this connection: a streaming producer is
        paused while too much waits for credits, a pull producer is asked
        for more when the queue runs low.
        """
        if self._producer is not None:
            raise RuntimeError(f"cannot register producer {producer!r}: {self._producer!r} "
                               "was never unregistered")
        if self._lost or self.peer is None:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = streaming
        self._producerPaused = False
        if streaming:
            self._pauseProducerIfFull()
        else:
            self._pullCall = self.reactor.callLater(0, self._pull)

    def unregisterProducer(self) -> None:
        """Stop pausing or pulling the registered producer."""
        self._producer = None
        if self._pullCall is not None and self._pullCall.active():
            self._pullCall.cancel()
        self._pullCall = None
