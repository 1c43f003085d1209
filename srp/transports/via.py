"""
via: an emulated VI provider over TCP, with what VI gives an application.

No VI (Virtual Interface Architecture) hardware exists any more, so
L{EmulatedVIProvider} carries C{via} connections over TCP sockets while
keeping VI's contract with the application:

  - B{message boundaries}: a protocol that provides L{IMessageReceiver}
    receives whole messages, and L{VIAConnection.sendMessage} sends them; a
    plain protocol sees a byte stream whose writes are cut into messages of at
    most the peer's posted buffer size;
  - B{credit-based flow control from posted receives}: each side posts
    C{receives} buffers of C{bufferSize} bytes; the peer may send one message
    per credit, never larger than a buffer, and a credit comes back (a CREDIT
    frame) once the application has consumed the message.  A sender without
    credits queues locally and pauses its producer; a peer that breaks the
    rules is disconnected with a L{VIAProtocolError};
  - B{several NIC paths tried in order}: a port map's C{NIC:PORT} pairs are
    tried in turn, and a dead path falls over to the next;
  - B{a local path on one host}: as VI hardware takes the loopback path
    without the network stack, a listener also listens on an abstract
    AF_UNIX socket named from its address and port (L{localName}), and a
    client whose path's address is one of this host's tries that socket
    first, falling back to TCP.  Only processes of one user use it (both
    sides check C{SO_PEERCRED}); the frames and credits are the same.

The provider sits behind L{srp.interfaces.IVIProvider}, where an RDMA
provider could plug in.  The frames are L{srp.wire.via}; C{docs/transports.md}
describes all of it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import (
    CannotListenError,
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    NoProtocol,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IListeningPort,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorUNIX,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from srp.interfaces import IVIProvider
from srp.records import InstanceInfo
from srp.server.handover import peerUser
from srp.transports.writethrough import directSocket, writeThrough
from srp.wire.errors import WireError
from srp.wire.instances import ViaInfo
from srp.wire.via import (
    ACCEPT,
    CLOSE,
    CONNECT,
    CREDIT,
    DATA,
    HANDSHAKE_SIZE,
    HEADER_SIZE,
    Close,
    Credit,
    Data,
    Frame,
    FrameDecoder,
    Handshake,
    kindName,
)

#: The 5-byte header of every frame after the handshake (L{srp.wire.via}).
_FRAME_HEADER = struct.Struct("<BI")
assert _FRAME_HEADER.size == HEADER_SIZE
_CLOSE_KIND = bytes([CLOSE])

#: Receive buffers each side posts unless told otherwise.
DEFAULT_RECEIVES = 16
#: Size of each posted receive buffer unless told otherwise: 64 KiB.
DEFAULT_BUFFER_SIZE = 64 * 1024
#: Bytes a sender queues (waiting for credits) before it pauses its producer.
DEFAULT_SEND_QUEUE = 256 * 1024
#: Seconds a server waits for a client's CONNECT handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a client waits for each path, unless told otherwise.
DEFAULT_TIMEOUT = 30.0
#: Bytes read from a local-path socket at a time (Twisted reads 64 KiB): a
#: read then holds several frames of the default 64 KiB, for fewer trips
#: through the reactor per message.  (On TCP, Twisted's 64 KiB measured better.)
LOCAL_READ_SIZE = 256 * 1024
#: The send buffer (C{SO_SNDBUF}) of a local-path socket holds the peer's
#: whole credit window, within these bounds (the kernel also caps it at
#: C{net.core.wmem_max}).  AF_UNIX's default, about 208 KiB, would stall a
#: sender every few frames.
LOCAL_SEND_BUFFER = (256 * 1024, 4 * 1024 * 1024)


class VIAProtocolError(ConnectionLost):
    """The connection was closed because a VIA peer broke the protocol."""

    MESSAGE = "VIA protocol violation"


class VIARemoteError(VIAProtocolError):
    """The peer closed the connection, reporting that this side broke the protocol."""

    MESSAGE = "the VIA peer closed the connection"


class VIAConnectError(ConnectError):
    """No VIA connection could be established."""

    MESSAGE = "VIA connection failed"


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


@implementer(IMessageTransport, IPushProducer, IConsumer)
class VIAConnection(Protocol):
    """
    One VIA connection: the protocol on the TCP socket, and the transport
    (L{IMessageTransport}, L{IPushProducer}, L{IConsumer}) of the
    application's protocol.

    As a producer, L{pauseProducing} stops delivering messages, and so stops
    returning credits: the peer stalls once it has filled every posted
    receive.  As a consumer, it pauses a registered producer while more than
    the provider's C{sendQueue} bytes wait for credits.

    @ivar app: the application's protocol, once the handshake is done.
    @ivar peer: the peer's handshake (its posted receives), once received.
    @ivar accepted: fires with C{app} when the handshake completes, or fails.
    @ivar local: whether the connection takes the local path (an AF_UNIX
        socket) rather than TCP.
    @ivar answered: whether the server answered the client's CONNECT, with an
        ACCEPT or a refusal (a client that fails before that on the local
        path falls back to TCP).
    """

    log = Logger()

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 appFactory: IProtocolFactory, addr: IAddress | None, client: bool,
                 local: bool = False, pathAddress: IAddress | None = None) -> None:
        self.provider = provider
        self.reactor = reactor
        self.appFactory = appFactory
        self.addr = addr
        self.client = client
        self.local = local
        #: On the local path, the TCP address it stands for: the server's end.
        self._pathAddress = pathAddress
        self.answered = False
        self.app: IProtocol | None = None
        self.peer: Handshake | None = None
        self.accepted: Deferred[IProtocol] = Deferred(self._cancelAccept)
        self._tcp: Any = None
        self._socket: socket.socket | None = None
        self._decoder = FrameDecoder(provider.bufferSize)
        # The fast path (after the handshake): the largest payload accepted,
        # the start of a header cut by a read, the pieces of a payload cut
        # by reads and how many bytes of it are still to come; and whether
        # the decoder has taken over (the connection is then closing).
        self._maxData = provider.bufferSize
        self._head = b""
        self._pieces: list[bytes | memoryview] = []
        self._missing = 0
        self._slow = False
        self._messages = False
        self._timer: IDelayedCall | None = None
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
        self._paused = False
        self._delivering = False
        # Closing.
        self.disconnecting = False
        self._closeSent = False
        self._peerClosed = False
        self._aborted = False
        self._lost = False
        self._appLost = False
        self._error: Exception | None = None
        self._pendingLoss: Failure | None = None

    # The TCP side.

    def connectionMade(self) -> None:
        self._tcp = self.transport
        if self.local and hasattr(self._tcp, "bufferSize"):
            self._tcp.bufferSize = LOCAL_READ_SIZE
        self._socket = directSocket(self._tcp)
        if self.local:
            # Abstract sockets have no file mode: anyone on the host may
            # connect, or bind the name first.  Only a process of this
            # process's own user is a peer on the local path.
            uid = peerUser(self._tcp)
            if uid != os.getuid():
                self._error = VIAConnectError(
                    string=f"the local VIA peer is a process of user {uid}, not of this "
                    f"process's user {os.getuid()}")
                if not self.client:
                    # Not a warning: an srp client of another user connects
                    # (and leaves at once) before it takes TCP.
                    self.log.debug("Refused a local VIA connection from a process of "
                                   "user {uid}", uid=uid)
                self._tcp.abortConnection()
                return
        else:
            setNoDelay = getattr(self._tcp, "setTcpNoDelay", None)
            if setNoDelay is not None:
                setNoDelay(True)  # messages go now: no Nagle delay on CREDIT frames
        if self.client:
            self._tcp.write(Handshake(CONNECT, self.provider.receives,
                                      self.provider.bufferSize).encode())
        else:
            self._timer = self.reactor.callLater(self.provider.handshakeTimeout,
                                                 self._handshakeTimedOut)

    def dataReceived(self, data: bytes) -> None:
        """Parse frames; a malformed frame or a broken rule closes the connection."""
        if self._stopped():
            return
        if self.peer is None and not self._slow:
            # Only the handshake's bytes go to the decoder: the frames after
            # it take the fast path.  A stream that opens with a CLOSE (a
            # refusal) stays with the decoder.
            if not self._decoder.buffered and data[:1] == _CLOSE_KIND:
                self._slow = True
            else:
                need = HANDSHAKE_SIZE - self._decoder.buffered
                self._decode(data[:need])
                data = data[need:]
                if not data or self._stopped():
                    return
        if self._slow or self.peer is None:
            self._decode(data)
        else:
            self._fastFrames(data)

    def _fastFrames(self, data: bytes) -> None:
        """
        Take the DATA and CREDIT frames that follow the rules straight out
        of C{data}, without the decoder; hand it anything else (a CLOSE, a
        broken rule) from that frame on, so that it closes the connection as
        it would have.  A DATA frame's payload is copied once, even when it
        spans reads.
        """
        if self._head:
            data, self._head = self._head + data, b""
        end = len(data)
        offset = 0
        if self._missing:
            offset = min(self._missing, end)
            self._pieces.append(memoryview(data)[:offset] if offset < end else data)
            self._missing -= offset
            if self._missing:
                return
            pieces, self._pieces = self._pieces, []
            self._received.append(b"".join(pieces))
        credited = False
        received = self._received
        while offset < end:
            if end - offset < HEADER_SIZE:
                self._head = data[offset:]
                break
            kind, value = _FRAME_HEADER.unpack_from(data, offset)
            if kind == DATA and value <= self._maxData and self._peerCredits > 0:
                self._peerCredits -= 1
                start = offset + HEADER_SIZE
                offset = start + value
                if offset <= end:
                    received.append(data[start:offset])
                else:
                    self._pieces = [memoryview(data)[start:]]
                    self._missing = offset - end
            elif kind == CREDIT and 0 < value <= self._outstanding():
                self.credits += value
                credited = True
                offset += HEADER_SIZE
            else:
                self._slow = True
                self._decode(data[offset:])
                return
        if credited:
            self._flush()
        self._deliver()

    def _outstanding(self) -> int:
        """Messages sent and not yet acknowledged by a CREDIT."""
        assert self.peer is not None
        return self.peer.receives - self.credits

    def _decode(self, data: bytes) -> None:
        """Parse C{data} with the decoder: the handshake, and frames after a deviation."""
        self._decoder.feed(data)
        while not self._stopped():
            try:
                frame = self._decoder.nextFrame()
                problem = None if frame is None else self._check(frame)
            except WireError as e:
                problem = str(e)
            if problem is not None:
                self._violation(problem)
                return
            if frame is None:
                break
            self._handle(frame)
        self._deliver()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        self._cancelTimers()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        why = self._lossReason(reason)
        if self.client and not self.accepted.called:
            error = why.value
            if not isinstance(error, ConnectError):
                error = VIAConnectError(string="the connection closed before the VIA "
                                        f"handshake completed ({error})")
            self.accepted.errback(error)
        if self.app is None:
            return
        if self._error is not None or self._aborted:
            self._received.clear()
        self._pendingLoss = why
        self._deliver()

    def _lossReason(self, reason: Failure) -> Failure:
        if self._error is not None:
            return Failure(self._error)
        if self._aborted:
            return reason
        if self._peerClosed or self._closeSent:
            return Failure(ConnectionDone("the VIA connection was closed"))
        if reason.check(ConnectionDone):
            return Failure(ConnectionLost("the VIA peer went away without a CLOSE frame"))
        return reason

    def _stopped(self) -> bool:
        return self._lost or self._aborted or self._peerClosed or self._error is not None

    def _check(self, frame: Handshake | Frame) -> str | None:
        """What rule C{frame} breaks, if any."""
        if isinstance(frame, Handshake):
            expected = ACCEPT if self.client else CONNECT
            if frame.kind != expected:
                return (f"the peer sent a {kindName(frame.kind)} handshake where "
                        f"{kindName(expected)} was due")
        elif isinstance(frame, Data):
            if self._peerCredits <= 0:
                return (f"the peer sent a DATA frame beyond its credits: all "
                        f"{self.provider.receives} posted receives hold unconsumed messages")
        elif isinstance(frame, Credit):
            # (The decoder refuses CREDIT before the handshake.)
            outstanding = self._outstanding()
            if frame.count > outstanding:
                return (f"the peer returned {frame.count} credits in a CREDIT frame but "
                        f"only {outstanding} messages were unacknowledged")
        return None

    def _handle(self, frame: Handshake | Frame) -> None:
        if isinstance(frame, Handshake):
            self._handshake(frame)
        elif isinstance(frame, Data):
            self._peerCredits -= 1
            self._received.append(frame.payload)
        elif isinstance(frame, Credit):
            self.credits += frame.count
            self._flush()
        elif self.app is None and self.client:
            self.answered = True
            self._error = VIAConnectError(string="the VIA server refused the connection: "
                                          f"{frame.reason or 'no reason given'}")
            self._tcp.loseConnection()
        else:
            if frame.reason:
                self._error = VIARemoteError(frame.reason)
            else:
                self._peerClosed = True
            self._tcp.loseConnection()

    def _handshake(self, handshake: Handshake) -> None:
        self._cancelTimers()
        self.answered = True
        self.peer = handshake
        self.credits = handshake.receives
        self.maxMessageSize = handshake.bufferSize
        if self.local:
            self._sizeSendBuffer(handshake)
        app = self.appFactory.buildProtocol(
            self.addr if self.addr is not None else self.getPeer())
        if app is None:
            if self.client:
                self._error = NoProtocol()
                self.accepted.errback(NoProtocol())
                self._closeWith(Close())
            else:
                self._error = VIAConnectError(string="the server built no protocol")
                self._closeWith(Close("the server's factory refused the connection"))
            return
        if not self.client:
            self._tcp.write(Handshake(ACCEPT, self.provider.receives,
                                      self.provider.bufferSize).encode())
        self.app = app
        self._messages = IMessageReceiver.providedBy(app)
        app.makeConnection(self)
        if not self.accepted.called:
            self.accepted.callback(app)

    def _sizeSendBuffer(self, peer: Handshake) -> None:
        """Let the kernel hold the peer's whole credit window (see L{LOCAL_SEND_BUFFER})."""
        low, high = LOCAL_SEND_BUFFER
        window = peer.receives * (peer.bufferSize + HEADER_SIZE)
        with contextlib.suppress(OSError, AttributeError):
            self._tcp.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                             max(low, min(high, window)))

    def _handshakeTimedOut(self) -> None:
        self._timer = None
        self._error = VIAProtocolError(
            f"no VIA handshake within {self.provider.handshakeTimeout:g} s")
        self._closeWith(Close.because(str(self._error)))

    def _violation(self, problem: str) -> None:
        """The peer broke the protocol: tell it why, and close."""
        self.log.info("VIA peer {peer} broke the protocol: {problem}",
                      peer=self._tcp.getPeer(), problem=problem)
        self._error = VIAProtocolError(problem)
        self._received.clear()
        self._closeWith(Close.because(problem))

    def _closeWith(self, close: Close) -> None:
        if not self._closeSent and not self._lost:
            self._closeSent = True
            self._tcp.write(close.encode())
        self._tcp.loseConnection()

    def _cancelTimers(self) -> None:
        for call in (self._timer, self._pullCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._pullCall = None

    def _cancelAccept(self, _: Deferred[IProtocol]) -> None:
        self.abandon(CancelledError())

    def abandon(self, error: Exception) -> None:
        """Give up waiting for the handshake: fail L{accepted} with C{error} and abort."""
        if not self.accepted.called:
            self.accepted.errback(error)
        self._aborted = True
        if self._tcp is not None and not self._lost:
            self._tcp.abortConnection()

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
            self._send([_FRAME_HEADER.pack(CREDIT, count)])
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
                self._send([_FRAME_HEADER.pack(DATA, size), data])
                if self._producer is not None:
                    self._afterSend()
                return
            view = memoryview(data)
            count = min(self.credits, -(-size // limit))
            parts: list[bytes | memoryview] = []
            for start in range(0, count * limit, limit):
                piece = view[start:start + limit]
                parts += (_FRAME_HEADER.pack(DATA, len(piece)), piece)
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
            self._send([_FRAME_HEADER.pack(DATA, len(message)), message])
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
                parts += (_FRAME_HEADER.pack(DATA, len(payload)), payload)
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

    def loseConnection(self) -> None:
        """Send what is queued (as credits allow), then close in order."""
        if self.disconnecting or self._lost:
            return
        self.disconnecting = True
        if self.peer is None or self._stopped():
            self._tcp.loseConnection()
        elif not self._queue:
            self._closeWith(Close())

    def abortConnection(self) -> None:
        """Close at once, dropping whatever is queued or undelivered."""
        self._aborted = True
        self._queue.clear()
        self.queuedBytes = 0
        self._received.clear()
        if not self._lost:
            self._tcp.abortConnection()

    def getPeer(self) -> IAddress:
        """
        The address of the peer's end of the path this connection took: on
        the local path, a client's peer is the TCP address the path stands for
        and a server's the AF_UNIX address of the client's socket.
        """
        if self.client and self._pathAddress is not None:
            return self._pathAddress
        peer: IAddress = self._tcp.getPeer()
        return peer

    def getHost(self) -> IAddress:
        """
        The address of this end of the path this connection took: on the
        local path, a server's is its listener's TCP address and a client's
        the AF_UNIX address of its socket.
        """
        if not self.client and self._pathAddress is not None:
            return self._pathAddress
        host: IAddress = self._tcp.getHost()
        return host

    def getHandle(self) -> Any:
        """
        The socket underneath (for L{srp.transports.tcp.detectDeadPeers}): a
        TCP socket, or an AF_UNIX one on the local path.
        """
        return getattr(self._tcp, "getHandle", lambda: None)()


class _VIAClientFactory(ClientFactory):
    """
    Builds the VIA connection of one path, for the application's factory.

    @param pathAddress: on the local path, the TCP address of the path it
        stands for (the application's factory and L{VIAConnection.getPeer}
        see it); L{None} on TCP.
    """

    noisy = False

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 factory: IProtocolFactory, pathAddress: IAddress | None = None) -> None:
        self.provider = provider
        self.reactor = reactor
        self.factory = factory
        self.pathAddress = pathAddress
        self.connection: VIAConnection | None = None

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


class _VIAServerFactory(Factory):
    """
    Builds a VIA connection for each connection a listener accepts.

    @param pathAddress: for the local (AF_UNIX) listener, the TCP listener's
        address; L{None} for the TCP listener, which alone starts and stops
        the application's factory.
    """

    noisy = False

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 factory: IProtocolFactory, pathAddress: IAddress | None = None) -> None:
        self.provider = provider
        self.reactor = reactor
        self.factory = factory
        self.pathAddress = pathAddress

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


def localName(address: str, port: int) -> str:
    """
    The abstract AF_UNIX socket of the VIA listener on TCP C{address}:C{port}:
    C{"\\0srp-via-127.0.0.2-40000"}.
    """
    return f"\0srp-via-{address}-{port}"


def isLocalAddress(host: str) -> bool:
    """
    Whether C{host} is an IP address of this host (in this network namespace):
    a loopback address, or one a socket can be bound to.  Names are not
    resolved: a name is never local.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def localNames(host: str, port: int) -> list[str]:
    """
    The abstract sockets a client tries, in order, for the path C{host}:C{port}:
    the listener on that address, then one on every address of its family
    (an IPv6 one, dual-stack, also takes IPv4).  None if C{host} is not local.
    """
    if not isLocalAddress(host):
        return []
    address = ipaddress.ip_address(host)
    anywhere = ["0.0.0.0", "::"] if address.version == 4 else ["::"]
    names = []
    for candidate in [str(address), *anywhere]:
        name = localName(candidate, port)
        if name not in names:
            names.append(name)
    return names


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


@implementer(IVIProvider)
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


_defaultProvider: IVIProvider = EmulatedVIProvider()


def defaultProvider() -> IVIProvider:
    """The provider VIA endpoints use when given none."""
    return _defaultProvider


def setDefaultProvider(provider: IVIProvider) -> IVIProvider:
    """
    Make C{provider} the one VIA endpoints use when given none (an RDMA
    provider, say); return the previous one.
    """
    global _defaultProvider
    previous, _defaultProvider = _defaultProvider, provider
    return previous


@implementer(IStreamClientEndpoint)
class VIAClientEndpoint:
    """
    Connects over VIA through the first of C{paths} that accepts.

    @param paths: (NIC address, port) pairs in the order to try them.
    @param timeout: seconds each path may take to connect and accept.
    @param provider: the VI provider (default: L{defaultProvider}).
    """

    def __init__(self, reactor: Any, paths: Sequence[tuple[str, int]],
                 timeout: float = DEFAULT_TIMEOUT, provider: IVIProvider | None = None) -> None:
        self.reactor = reactor
        self.paths = tuple(paths)
        self.timeout = timeout
        self.provider = provider if provider is not None else defaultProvider()

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
        self.provider = provider if provider is not None else defaultProvider()

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


def endpointFor(reactor: Any, host: str, info: InstanceInfo,
                timeout: float) -> IStreamClientEndpoint | None:
    """A VIA endpoint to C{info}'s via paths on C{host}, or L{None} if it has none."""
    if info.via is None:
        return None
    return VIAClientEndpoint(reactor, pathsFor(host, info.via), timeout=timeout)


def parsePaths(text: str) -> list[tuple[str, int]]:
    """
    Parse C{NIC:PORT[,NIC:PORT...]} as given in an endpoint string.

    @raise ValueError: if an item is not C{ADDRESS:PORT}, or its NIC is
        numeric (only a port map has a candidate host to stand for).
    """
    paths = []
    for item in text.split(","):
        nic, sep, port = item.strip().rpartition(":")
        nic = nic.strip()
        if nic.startswith("[") and nic.endswith("]"):
            nic = nic[1:-1]
        if not sep or not nic or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"via endpoint path {item!r} is not ADDRESS:PORT")
        if nic.isdigit():
            raise ValueError(f"via endpoint path {item!r}: a numeric NIC stands for a "
                             "candidate's host, which an endpoint string has not; give "
                             "the NIC's address")
        paths.append((nic, int(port)))
    return paths


_YES, _NO = {"yes", "true", "on", "1"}, {"no", "false", "off", "0"}


def _flag(name: str, value: str) -> bool:
    if value.lower() in _YES | _NO:
        return value.lower() in _YES
    raise ValueError(f"via endpoint option {name}={value!r} is neither yes nor no")


def _providerFrom(options: dict[str, str]) -> IVIProvider | None:
    if not _PROVIDER_OPTIONS & set(options):
        return None
    local = _flag("local", options.get("local", "yes"))
    try:
        return EmulatedVIProvider(
            receives=int(options.get("receives", DEFAULT_RECEIVES)),
            bufferSize=int(options.get("buffer_size", DEFAULT_BUFFER_SIZE)),
            sendQueue=int(options.get("send_queue", DEFAULT_SEND_QUEUE)), local=local)
    except ValueError as e:
        raise ValueError(f"via endpoint: {e}") from None


def _checkOptions(options: dict[str, str], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"via endpoint has no option {sorted(unknown)[0]!r}; known: "
                         f"{', '.join(sorted(known))}")


_PROVIDER_OPTIONS = {"receives", "buffer_size", "send_queue", "local"}


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class VIAClientParser:
    """
    Parses C{via:ADDRESS:PORT[,ADDRESS:PORT...][:option=value...]} into a
    L{VIAClientEndpoint}.

    The paths are tried in order; their colons may be escaped
    (C{via:10.0.0.1\\:1433}) but need not be.  Options: C{timeout} (seconds
    per path, 30), C{receives}, C{buffer_size}, C{send_queue} and C{local}
    (C{yes} or C{no}: an L{EmulatedVIProvider} of those settings instead of
    the default provider).
    """

    prefix = "via"
    _OPTIONS = {"timeout"} | _PROVIDER_OPTIONS

    def parseStreamClient(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamClientEndpoint:
        options = {k: str(v) for k, v in kwargs.items()}
        _checkOptions(options, self._OPTIONS)
        if not args:
            raise ValueError("via endpoint needs ADDRESS:PORT[,ADDRESS:PORT...]")
        paths = parsePaths(":".join(map(str, args)))
        try:
            timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise ValueError(f"via endpoint timeout {options['timeout']!r} is not "
                             "a number") from None
        return VIAClientEndpoint(reactor, paths, timeout, _providerFrom(options))


@implementer(IPlugin, IStreamServerEndpointStringParser)
class VIAServerParser:
    """
    Parses C{via:PORT[:interface=ADDRESS][:option=value...]} into a
    L{VIAServerEndpoint}.

    C{interface} is the address of the NIC to listen on (every NIC if
    absent); C{receives}, C{buffer_size}, C{send_queue} and C{local} (C{yes}
    or C{no}) make an L{EmulatedVIProvider} of those settings instead of the
    default provider.
    """

    prefix = "via"
    _OPTIONS = {"port", "interface"} | _PROVIDER_OPTIONS

    def parseStreamServer(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamServerEndpoint:
        options = {k: str(v) for k, v in kwargs.items()}
        _checkOptions(options, self._OPTIONS)
        given = [str(a) for a in args]
        if "port" in options:
            given.insert(0, options["port"])
        if len(given) != 1 or not given[0].isdigit() or not 0 <= int(given[0]) <= 65535:
            raise ValueError(f"via server endpoint needs one PORT, not {':'.join(given)!r}")
        return VIAServerEndpoint(reactor, int(given[0]), options.get("interface", ""),
                                 _providerFrom(options))
