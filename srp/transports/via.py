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
    tried in turn, and a dead path falls over to the next.

The provider sits behind L{srp.interfaces.IVIProvider}, where an RDMA
provider could plug in.  The frames are L{srp.wire.via}; C{docs/transports.md}
describes all of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import (
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
from srp.wire.errors import WireError
from srp.wire.instances import ViaInfo
from srp.wire.via import (
    ACCEPT,
    CONNECT,
    Close,
    Credit,
    Data,
    Frame,
    FrameDecoder,
    Handshake,
    dataHeader,
    kindName,
)

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
    """

    log = Logger()

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 appFactory: IProtocolFactory, addr: IAddress | None, client: bool) -> None:
        self.provider = provider
        self.reactor = reactor
        self.appFactory = appFactory
        self.addr = addr
        self.client = client
        self.app: IProtocol | None = None
        self.peer: Handshake | None = None
        self.accepted: Deferred[IProtocol] = Deferred(self._cancelAccept)
        self._tcp: Any = None
        self._decoder = FrameDecoder(provider.bufferSize)
        self._messages = False
        self._timer: IDelayedCall | None = None
        # Sending: credits the peer gave us and what waits for more.
        self.credits = 0
        self.maxMessageSize = 0
        self.queuedBytes = 0
        self._queue: deque[bytes | bytearray] = deque()
        #: The registered producer: an IPushProducer if streaming, else an IPullProducer.
        self._producer: Any = None
        self._streaming = False
        self._producerPaused = False
        self._pullCall: IDelayedCall | None = None
        # Receiving: messages not yet delivered, credits not yet returned.
        self._received: deque[bytes] = deque()
        self._peerCredits = provider.receives
        self._toReturn = 0
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
            assert self.peer is not None  # the decoder refuses CREDIT before the handshake
            outstanding = self.peer.receives - self.credits
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
        self.peer = handshake
        self.credits = handshake.receives
        self.maxMessageSize = handshake.bufferSize
        app = self.appFactory.buildProtocol(
            self.addr if self.addr is not None else self._tcp.getPeer())
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
        """Hand queued messages to the application, then return their credits."""
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
        if self._toReturn and not self._stopped() and not self._closeSent:
            count, self._toReturn = self._toReturn, 0
            self._peerCredits += count
            self._tcp.write(Credit(count).encode())
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

    def _writable(self) -> bool:
        return self.peer is not None and not self.disconnecting and not self._stopped()

    def write(self, data: bytes) -> None:
        """Send C{data} as a stream: cut into messages of at most L{maxMessageSize} bytes."""
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if not data or not self._writable():
            return
        limit = self.maxMessageSize
        view = memoryview(data)
        offset = 0
        if self._queue and isinstance(self._queue[-1], bytearray):
            # Stream bytes that wait for a credit may share one message.
            tail = self._queue[-1]
            piece = view[:max(0, limit - len(tail))]
            tail += piece
            offset = len(piece)
        while offset < len(view):
            piece = view[offset:offset + limit]
            offset += len(piece)
            self._queue.append(bytes(piece) if len(piece) == limit else bytearray(piece))
        self.queuedBytes += len(data)
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
        self._queue.append(bytes(message))
        self.queuedBytes += len(message)
        self._flush()
        self._pauseProducerIfFull()

    def _flush(self) -> None:
        """Send queued messages while there are credits for them."""
        if self.peer is None or self._stopped():
            return
        while self.credits > 0 and self._queue:
            payload = self._queue.popleft()
            self.queuedBytes -= len(payload)
            self.credits -= 1
            self._tcp.writeSequence([dataHeader(len(payload)), bytes(payload)])
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
        """The address of the peer's end of the path this connection took."""
        peer: IAddress = self._tcp.getPeer()
        return peer

    def getHost(self) -> IAddress:
        """The address of this end of the path this connection took."""
        host: IAddress = self._tcp.getHost()
        return host

    def getHandle(self) -> Any:
        """The socket underneath (for L{srp.transports.tcp.detectDeadPeers})."""
        return getattr(self._tcp, "getHandle", lambda: None)()


class _VIAClientFactory(ClientFactory):
    """Builds the VIA connection of one path, for the application's factory."""

    noisy = False

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 factory: IProtocolFactory) -> None:
        self.provider = provider
        self.reactor = reactor
        self.factory = factory

    def buildProtocol(self, addr: IAddress | None) -> VIAConnection:
        return VIAConnection(self.provider, self.reactor, self.factory, addr, client=True)

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()


class _VIAServerFactory(Factory):
    """Builds a VIA connection for each TCP connection a listener accepts."""

    noisy = False

    def __init__(self, provider: EmulatedVIProvider, reactor: Any,
                 factory: IProtocolFactory) -> None:
        self.provider = provider
        self.reactor = reactor
        self.factory = factory

    def buildProtocol(self, addr: IAddress | None) -> VIAConnection:
        return VIAConnection(self.provider, self.reactor, self.factory, addr, client=False)

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()


@implementer(IVIProvider)
class EmulatedVIProvider:
    """
    VI emulated over TCP sockets: message boundaries, credit-based flow
    control and NIC fail-over, without kernel bypass, RDMA or zero copy.

    @param receives: receive buffers this side posts (1-65535).
    @param bufferSize: bytes in each (1 to 16 MiB): the largest message the
        peer may send.
    @param sendQueue: bytes queued for lack of credits before a registered
        producer is paused; it is resumed below half of that.
    @param handshakeTimeout: seconds a server waits for a client's CONNECT.
    @raise ValueError: if C{receives} or C{bufferSize} is out of range.
    """

    name = "emulated"
    log = Logger()

    def __init__(self, receives: int = DEFAULT_RECEIVES,
                 bufferSize: int = DEFAULT_BUFFER_SIZE, sendQueue: int = DEFAULT_SEND_QUEUE,
                 handshakeTimeout: float = HANDSHAKE_TIMEOUT) -> None:
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

    def __repr__(self) -> str:
        return (f"EmulatedVIProvider(receives={self.receives}, "
                f"bufferSize={self.bufferSize}, sendQueue={self.sendQueue})")

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
        deadline = reactor.seconds() + timeout
        kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        connected = kind(reactor, host, port, timeout=timeout).connect(
            _VIAClientFactory(self, reactor, factory))
        connection: VIAConnection = await connected  # type: ignore[assignment]
        timer = reactor.callLater(
            max(0.0, deadline - reactor.seconds()), connection.abandon,
            ConnectTimeoutError(string=f"no VIA ACCEPT from {host}:{port} within "
                                f"{timeout:g} s"))
        try:
            return await connection.accepted
        finally:
            if timer.active():
                timer.cancel()

    def listen(self, reactor: Any, port: int, factory: IProtocolFactory,
               interface: str = "") -> IListeningPort:
        """Accept VIA connections on TCP C{port} of C{interface}; see L{IVIProvider.listen}."""
        listening: IListeningPort = reactor.listenTCP(
            port, _VIAServerFactory(self, reactor, factory), interface=interface)
        return listening


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


def _providerFrom(options: dict[str, str]) -> IVIProvider | None:
    if not {"receives", "buffer_size", "send_queue"} & set(options):
        return None
    try:
        return EmulatedVIProvider(
            receives=int(options.get("receives", DEFAULT_RECEIVES)),
            bufferSize=int(options.get("buffer_size", DEFAULT_BUFFER_SIZE)),
            sendQueue=int(options.get("send_queue", DEFAULT_SEND_QUEUE)))
    except ValueError as e:
        raise ValueError(f"via endpoint: {e}") from None


def _checkOptions(options: dict[str, str], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"via endpoint has no option {sorted(unknown)[0]!r}; known: "
                         f"{', '.join(sorted(known))}")


_PROVIDER_OPTIONS = {"receives", "buffer_size", "send_queue"}


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class VIAClientParser:
    """
    Parses C{via:ADDRESS:PORT[,ADDRESS:PORT...][:option=value...]} into a
    L{VIAClientEndpoint}.

    The paths are tried in order; their colons may be escaped
    (C{via:10.0.0.1\\:1433}) but need not be.  Options: C{timeout} (seconds
    per path, 30), C{receives}, C{buffer_size} and C{send_queue} (an
    L{EmulatedVIProvider} of those settings instead of the default provider).
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
    absent); C{receives}, C{buffer_size} and C{send_queue} make an
    L{EmulatedVIProvider} of those settings instead of the default provider.
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
