"""
One VIA connection: the protocol on the socket underneath (TCP, or AF_UNIX
on the local path), which does the handshake, parses the frames and closes.

The frames are L{srp.wire.via}; the flow control the application sees is
L{srp.transports.via.credits}.  After the handshake, DATA and CREDIT frames
that follow the rules take a fast path that parses their headers straight
out of each read; anything else goes to L{FrameDecoder}.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, NoProtocol
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.transports.peercred import peerUser
from srp.transports.via.credits import CreditedTransport, IMessageReceiver, IMessageTransport
from srp.transports.writethrough import directSocket
from srp.wire.errors import WireError
from srp.wire.via import (
    ACCEPT,
    CLOSE,
    CONNECT,
    CREDIT,
    DATA,
    FRAME_HEADER,
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

if TYPE_CHECKING:
    from srp.transports.via.provider import EmulatedVIProvider

_CLOSE_KIND = bytes([CLOSE])

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


@implementer(IMessageTransport, IPushProducer, IConsumer)
class VIAConnection(CreditedTransport, Protocol):
    """
    One VIA connection: the protocol on the socket underneath, and the
    transport (L{IMessageTransport}, L{IPushProducer}, L{IConsumer}) of the
    application's protocol (L{CreditedTransport}).

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
        super().__init__(provider, reactor)
        self.appFactory = appFactory
        self.addr = addr
        self.client = client
        self.local = local
        #: On the local path, the TCP address it stands for: the server's end.
        self._pathAddress = pathAddress
        self.answered = False
        self.accepted: Deferred[IProtocol] = Deferred(self._cancelAccept)
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
        self._timer: IDelayedCall | None = None
        self._peerClosed = False
        self._error: Exception | None = None

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
            kind, value = FRAME_HEADER.unpack_from(data, offset)
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
