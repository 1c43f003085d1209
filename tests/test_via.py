"""The via transport: frame codec, flow control, endpoints, fail-over and parsers."""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IPullProducer,
    IPushProducer,
    IReactorUNIX,
)
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from srp.client.verifiers import HelloVerifier, WrongInstance
from srp.interfaces import IVIProvider
from srp.records import InstanceInfo
from srp.server.hello import HelloFactory
from srp.transports.tcp import detectDeadPeers
from srp.transports.via import (
    EmulatedVIProvider,
    IMessageReceiver,
    IMessageTransport,
    VIAClientEndpoint,
    VIAClientParser,
    VIAConnectError,
    VIAConnection,
    VIAListeningPort,
    VIAProtocolError,
    VIARemoteError,
    VIAServerEndpoint,
    VIAServerParser,
    endpointFor,
    isLocalAddress,
    localName,
    localNames,
    parsePaths,
    pathsFor,
)
from srp.wire.errors import WireError
from srp.wire.instances import ViaAddress, ViaInfo
from srp.wire.via import (
    ACCEPT,
    CLOSE,
    CONNECT,
    HANDSHAKE_SIZE,
    HEADER_SIZE,
    MAX_REASON,
    Close,
    Credit,
    Data,
    FrameDecoder,
    Handshake,
    ViaWireError,
    dataHeader,
)

# The codec.

handshakes = st.builds(Handshake, kind=st.sampled_from([CONNECT, ACCEPT]),
                       receives=st.integers(1, 0xFFFF), bufferSize=st.integers(1, 1 << 24))
frames = st.one_of(
    st.builds(Data, payload=st.binary(max_size=300)),
    st.builds(Credit, count=st.integers(1, 0xFFFF)),
    st.builds(Close, reason=st.text(max_size=40)),
)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """C{data} cut at the offsets C{cuts} (taken modulo its length)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        yield data[start:end]


def decodeAll(decoder: FrameDecoder) -> list[object]:
    """Every complete frame the decoder holds."""
    out: list[object] = []
    while (frame := decoder.nextFrame()) is not None:
        out.append(frame)
    return out


@given(handshakes, st.lists(frames, max_size=8), st.lists(st.integers(0, 5000), max_size=6))
def test_round_trip_in_any_chunks(handshake: Handshake, sent: list[Any],
                                  cuts: list[int]) -> None:
    stream = handshake.encode() + b"".join(frame.encode() for frame in sent)
    decoder = FrameDecoder(maxData=300)
    received: list[object] = []
    for piece in chunked(stream, cuts):
        decoder.feed(piece)
        received.extend(decodeAll(decoder))
    assert received == [handshake, *sent]
    assert decoder.buffered == 0


@given(st.binary(max_size=400), st.booleans(), st.integers(0, 70000))
def test_decoder_raises_only_wire_error(data: bytes, handshake: bool, maxData: int) -> None:
    decoder = FrameDecoder(maxData, handshake)
    decoder.feed(data)
    with contextlib.suppress(WireError):
        decodeAll(decoder)


@given(st.binary(max_size=400))
def test_decoder_raises_only_wire_error_after_a_handshake(data: bytes) -> None:
    decoder = FrameDecoder(64)
    decoder.feed(Handshake(ACCEPT, 2, 64).encode() + data)
    with contextlib.suppress(WireError):
        decodeAll(decoder)


class CodecTests(SynchronousTestCase):
    """The byte layout of docs/transports.md, and the decoder's refusals."""

    def test_handshake_layout(self) -> None:
        self.assertEqual(Handshake(CONNECT, 16, 65536).encode(),
                         bytes.fromhex("00535250 2d564941 01 01 1000 00000100"))
        self.assertEqual(HANDSHAKE_SIZE, 16)

    def test_frame_layout(self) -> None:
        self.assertEqual(Data(b"hi").encode(), bytes.fromhex("01 02000000") + b"hi")
        self.assertEqual(Credit(3).encode(), bytes.fromhex("02 03000000"))
        self.assertEqual(Close("no").encode(), bytes.fromhex("03 02000000") + b"no")
        self.assertEqual(HEADER_SIZE, 5)

    def refusal(self, data: bytes, maxData: int = 100, handshake: bool = False) -> str:
        decoder = FrameDecoder(maxData, handshake)
        decoder.feed(data)
        with self.assertRaises(ViaWireError) as caught:
            decodeAll(decoder)
        return str(caught.exception)

    def test_oversize_data_refused_at_its_header(self) -> None:
        self.assertEqual(self.refusal(dataHeader(101)),
                         "a DATA frame of 101 bytes exceeds the 100-byte receive buffers posted")

    def test_refusals(self) -> None:
        for data, handshake, complaint in [
            (b"GET / HTTP/1.1\r\n", True, "does not speak VIA"),
            (b"\x00SRP-VIA\x02\x01\x01\x00\x01\x00\x00\x00", True, "version 2"),
            (b"\x00SRP-VIA\x01\x07\x01\x00\x01\x00\x00\x00", True, "neither CONNECT"),
            (b"\x00SRP-VIA\x01\x01\x00\x00\x01\x00\x00\x00", True, "0 posted receives"),
            (b"\x00SRP-VIA\x01\x01\x01\x00\x00\x00\x00\x00", True, "0 bytes is out of range"),
            (Data(b"x").encode(), True, "does not speak VIA"),
            (bytes.fromhex("02 00000000"), False, "returning 0 credits"),
            (bytes.fromhex("09 00000000"), False, "unknown frame type 0x09"),
            (bytes.fromhex("03 01040000"), False, f"exceeds {MAX_REASON} bytes"),
        ]:
            self.assertIn(complaint, self.refusal(data, handshake=handshake), data)

    def test_a_refusing_close_may_replace_the_handshake(self) -> None:
        decoder = FrameDecoder(100)
        decoder.feed(Close("busy").encode())
        self.assertEqual(decodeAll(decoder), [Close("busy")])

    def test_close_reason_is_cut_to_fit(self) -> None:
        close = Close.because("é" * MAX_REASON)
        self.assertLessEqual(len(close.reason.encode("utf-8")), MAX_REASON)
        self.assertRaises(ViaWireError, Close, "x" * (MAX_REASON + 1))


# Connections, deterministically: StringTransports and a Clock.


class Peer(Protocol):
    """Records what it receives; may pause its transport from the start."""

    def __init__(self, pause: bool = False) -> None:
        self.pause = pause
        self.data = bytearray()
        self.messages: list[bytes] = []
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()
        self._waits: list[tuple[int, Deferred[bytes]]] = []

    def connectionMade(self) -> None:
        if self.pause:
            self.via.pauseProducing()

    @property
    def via(self) -> VIAConnection:
        """The VIA connection this protocol runs on."""
        return cast(VIAConnection, self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for size, waiting in list(self._waits):
            if len(self.data) >= size:
                self._waits.remove((size, waiting))
                waiting.callback(bytes(self.data))

    def received(self, size: int) -> Deferred[bytes]:
        """Fires with everything received once at least C{size} bytes have been."""
        waiting: Deferred[bytes] = Deferred()
        self._waits.append((size, waiting))
        self.dataReceived(b"")
        return waiting

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.reason = reason
        self.lost.callback(None)


@implementer(IMessageReceiver)
class MessagePeer(Peer):
    """Receives whole messages."""

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)
        self.dataReceived(message)


class Echo(Protocol):
    """Writes back what it receives, as a stream."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


@implementer(IMessageReceiver)
class MessageEcho(Protocol):
    """Sends back each message it receives, as a message."""

    def messageReceived(self, message: bytes) -> None:
        cast(VIAConnection, self.transport).sendMessage(message)


class Given(Factory):
    """Builds the protocols it is given, in turn (or L{None} when they run out)."""

    def __init__(self, *protocols: Protocol) -> None:
        self.protocols = list(protocols)
        self.built: Deferred[Protocol] = Deferred()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if not self.protocols:
            return None
        protocol = self.protocols.pop(0)
        if not self.built.called:
            self.built.callback(protocol)
        return protocol


class Pair:
    """A client and a server VIA connection joined by StringTransports."""

    def __init__(self, client: Protocol | None, server: Protocol | None,
                 clientProvider: EmulatedVIProvider | None = None,
                 serverProvider: EmulatedVIProvider | None = None) -> None:
        self.clock = Clock()
        self.clientFactory = Given(*([client] if client else []))
        self.serverFactory = Given(*([server] if server else []))
        self.client = VIAConnection(clientProvider or EmulatedVIProvider(), self.clock,
                                    self.clientFactory, None, client=True)
        self.server = VIAConnection(serverProvider or EmulatedVIProvider(), self.clock,
                                    self.serverFactory, None, client=False)
        self.clientWire = StringTransport()
        self.serverWire = StringTransport()
        self.accepted: list[object] = []
        self.client.accepted.addBoth(self.accepted.append)
        self.server.makeConnection(self.serverWire)
        self.client.makeConnection(self.clientWire)
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until neither side has more to say."""
        while True:
            toServer, toClient = self.clientWire.value(), self.serverWire.value()
            self.clientWire.clear()
            self.serverWire.clear()
            if not toServer and not toClient:
                break
            self.server.dataReceived(toServer)
            self.client.dataReceived(toClient)
        if self.clientWire.disconnecting or self.serverWire.disconnecting:
            for side in (self.client, self.server):
                side.connectionLost(Failure(ConnectionDone()))


class ConnectionTests(SynchronousTestCase):
    """Handshake, boundaries, credits and closing, one step at a time."""

    def test_handshake(self) -> None:
        client, server = Peer(), Peer()
        pair = Pair(client, server, EmulatedVIProvider(4, 1000), EmulatedVIProvider(8, 2000))
        self.assertEqual(pair.accepted, [client])
        self.assertIs(client.transport, pair.client)
        self.assertIs(server.transport, pair.server)
        self.assertTrue(verifyObject(IMessageTransport, pair.client))
        self.assertEqual((pair.client.credits, pair.client.maxMessageSize), (8, 2000))
        self.assertEqual((pair.server.credits, pair.server.maxMessageSize), (4, 1000))

    def test_messages_keep_their_boundaries(self) -> None:
        client, server = MessagePeer(), MessageEcho()
        pair = Pair(client, server)
        sent = [b"", b"a", b"bc" * 500, b"\x00" * 65536, b"last"]
        for message in sent:
            client.via.sendMessage(message)
        pair.pump()
        self.assertEqual(client.messages, sent)

    def test_a_message_larger_than_the_peers_buffers_is_refused(self) -> None:
        client = MessagePeer()
        Pair(client, Peer(), serverProvider=EmulatedVIProvider(4, 100))
        with self.assertRaises(ValueError) as caught:
            client.via.sendMessage(b"x" * 101)
        self.assertIn("101 bytes exceeds the 100-byte receive buffers", str(caught.exception))

    def test_stream_writes_are_cut_at_the_peers_buffer_size(self) -> None:
        client, server = Peer(), MessagePeer()
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(4, 1000))
        data = bytes(range(256)) * 20  # 5,120 bytes: more than four buffers
        client.via.write(data)
        pair.pump()
        self.assertEqual(bytes(server.data), data)
        self.assertTrue(all(len(m) <= 1000 for m in server.messages))

    def test_a_sender_sends_one_message_per_credit(self) -> None:
        client, server = Peer(), MessagePeer(pause=True)
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(2, 10))
        for n in range(5):
            client.via.sendMessage(b"%d" % n)
        pair.pump()
        self.assertEqual((pair.client.credits, pair.server.pendingMessages), (0, 2))
        self.assertEqual(pair.client.queuedBytes, 3)
        self.assertEqual(server.messages, [])
        server.via.resumeProducing()
        pair.pump()
        self.assertEqual(server.messages, [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(pair.client.credits, 2)

    def test_credits_return_in_batches_of_half_the_receives(self) -> None:
        client, server = Peer(), MessagePeer()
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(8, 100))
        self.assertEqual(pair.server.creditBatch, 4)
        for n in range(3):
            client.via.sendMessage(b"%d" % n)
        pair.pump()
        self.assertEqual(server.messages, [b"0", b"1", b"2"])
        self.assertEqual(pair.client.credits, 5, "three consumed, none returned yet")
        client.via.sendMessage(b"3")
        pair.pump()
        self.assertEqual(pair.client.credits, 8, "four consumed: four returned in one CREDIT")

    def test_a_write_the_credits_cover_goes_out_in_one_piece(self) -> None:
        client, server = Peer(), MessagePeer()
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(4, 100))
        pair.clientWire.clear()
        client.via.write(bytes(range(250)) + b"x" * 300)  # 6 messages: 4 now, 2 queued
        self.assertEqual(pair.clientWire.value(), b"".join(
            dataHeader(100) + (bytes(range(250)) + b"x" * 300)[n:n + 100]
            for n in range(0, 400, 100)))
        self.assertEqual((pair.client.credits, pair.client.queuedBytes), (0, 150))
        pair.pump()
        self.assertEqual(b"".join(server.messages), bytes(range(250)) + b"x" * 300)
        self.assertEqual([len(m) for m in server.messages], [100] * 5 + [50])

    def test_queued_stream_writes_share_messages(self) -> None:
        client, server = Peer(), MessagePeer(pause=True)
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(1, 10))
        for byte in b"abcdefghijkl":
            client.via.write(bytes([byte]))
        pair.pump()
        server.via.resumeProducing()
        pair.pump()
        self.assertEqual(server.messages, [b"a", b"bcdefghijk", b"l"])

    def test_orderly_close_sends_the_queue_first(self) -> None:
        client, server = Peer(), Peer(pause=True)
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(1, 4))
        client.via.write(b"0123456789")
        client.via.loseConnection()
        client.via.write(b"ignored")
        pair.pump()
        self.assertIsNone(client.reason)
        server.via.resumeProducing()
        pair.pump()
        self.assertEqual(bytes(server.data), b"0123456789")
        for peer in (client, server):
            assert peer.reason is not None
            self.assertTrue(peer.reason.check(ConnectionDone), peer.reason)

    def test_a_paused_receiver_learns_of_the_close_after_its_messages(self) -> None:
        client, server = Peer(), Peer(pause=True)
        pair = Pair(client, server)
        client.via.write(b"before the close")
        client.via.loseConnection()
        pair.pump()
        self.assertIsNone(server.reason)
        server.via.resumeProducing()
        self.assertEqual(bytes(server.data), b"before the close")
        assert server.reason is not None
        self.assertTrue(server.reason.check(ConnectionDone))

    def test_going_away_without_close_is_a_lost_connection(self) -> None:
        client, server = Peer(), Peer()
        pair = Pair(client, server)
        pair.server.connectionLost(Failure(ConnectionDone()))
        assert server.reason is not None
        self.assertTrue(server.reason.check(ConnectionLost))
        self.assertIn("without a CLOSE frame", str(server.reason.value))

    def test_a_pull_producer_is_pulled_while_there_is_room(self) -> None:
        client, server = Peer(), Peer()
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(2, 100))
        chunks = [b"%03d" % n for n in range(20)]

        @implementer(IPullProducer)
        class Pull:
            def resumeProducing(self) -> None:
                if chunks:
                    client.via.write(chunks.pop(0))
                else:
                    client.via.unregisterProducer()

            def stopProducing(self) -> None:
                pass

        client.via.registerProducer(Pull(), False)
        for _ in range(30):
            pair.clock.advance(0)
            pair.pump()
        self.assertEqual(bytes(server.data), b"".join(b"%03d" % n for n in range(20)))

    def test_server_refusal(self) -> None:
        pair = Pair(Peer(), None)
        [failure] = pair.accepted
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(VIAConnectError))
        self.assertIn("refused the connection: the server's factory refused",
                      str(failure.value))

    def test_server_handshake_timeout(self) -> None:
        clock = Clock()
        server = VIAConnection(EmulatedVIProvider(handshakeTimeout=2), clock, Given(Peer()),
                               None, client=False)
        wire = StringTransport()
        server.makeConnection(wire)
        clock.advance(2)
        self.assertTrue(wire.disconnecting)
        self.assertIn(b"no VIA handshake within 2 s", wire.value())
        self.assertEqual(clock.getDelayedCalls(), [])


class ViolationTests(SynchronousTestCase):
    """A peer that breaks the rules is disconnected, and told why."""

    def serverFedWith(self, frames: bytes, pause: bool = True) -> tuple[Peer, StringTransport]:
        """A server (4 receives of 100 bytes) after a CONNECT and C{frames}."""
        app = Peer(pause=pause)
        server = VIAConnection(EmulatedVIProvider(4, 100), Clock(), Given(app), None,
                               client=False)
        wire = StringTransport()
        server.makeConnection(wire)
        server.dataReceived(Handshake(CONNECT, 2, 100).encode() + frames)
        if wire.disconnecting:
            server.connectionLost(Failure(ConnectionDone()))
        return app, wire

    def assertViolation(self, app: Peer, wire: StringTransport, complaint: str) -> None:
        assert app.reason is not None
        self.assertTrue(app.reason.check(VIAProtocolError), app.reason)
        self.assertIn(complaint, str(app.reason.value))
        self.assertTrue(wire.disconnecting)
        written = wire.value()[HANDSHAKE_SIZE:]
        self.assertEqual(written[0], CLOSE)
        self.assertIn(complaint.encode(), written)

    def test_data_beyond_credits(self) -> None:
        app, wire = self.serverFedWith(Data(b"x").encode() * 5)
        self.assertViolation(app, wire, "DATA frame beyond its credits: all 4 posted receives")

    def test_data_beyond_credits_even_when_consumed_in_the_same_read(self) -> None:
        app, wire = self.serverFedWith(Data(b"x").encode() * 5, pause=False)
        self.assertViolation(app, wire, "beyond its credits")

    def test_oversize_data(self) -> None:
        app, wire = self.serverFedWith(dataHeader(101) + b"x" * 101)
        self.assertViolation(app, wire, "DATA frame of 101 bytes exceeds the 100-byte")

    def test_credits_never_given(self) -> None:
        app, wire = self.serverFedWith(Credit(1).encode())
        self.assertViolation(app, wire, "returned 1 credits in a CREDIT frame but only 0")

    def test_second_handshake(self) -> None:
        app, wire = self.serverFedWith(Handshake(CONNECT, 2, 100).encode())
        self.assertViolation(app, wire, "unknown frame type 0x00")

    def test_wrong_handshake_kind(self) -> None:
        server = VIAConnection(EmulatedVIProvider(), Clock(), Given(Peer()), None,
                               client=False)
        wire = StringTransport()
        server.makeConnection(wire)
        server.dataReceived(Handshake(ACCEPT, 2, 100).encode())
        self.assertIn(b"sent a ACCEPT handshake where CONNECT was due", wire.value())

    def test_the_violator_hears_why(self) -> None:
        client, server = Peer(), Peer(pause=True)
        pair = Pair(client, server, serverProvider=EmulatedVIProvider(1, 10))
        pair.client.credits = 3  # a buggy sender: it believes in credits it was never given
        for _ in range(3):
            client.via.sendMessage(b"m")
        pair.pump()
        assert client.reason is not None and server.reason is not None
        self.assertTrue(server.reason.check(VIAProtocolError))
        self.assertTrue(client.reason.check(VIARemoteError))
        self.assertIn("the VIA peer closed the connection: the peer sent a DATA frame beyond "
                      "its credits", str(client.reason.value))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.lists(st.integers(0, 20000),
                                                                 max_size=12),
       st.booleans())
def test_frames_in_any_chunks_arrive_whole(payloads: list[bytes], cuts: list[int],
                                           close: bool) -> None:
    app = MessagePeer()
    server = VIAConnection(EmulatedVIProvider(64, 300), Clock(), Given(app), None,
                           client=False)
    wire = StringTransport()
    server.makeConnection(wire)
    stream = (Handshake(CONNECT, 2, 100).encode()
              + b"".join(Data(payload).encode() for payload in payloads)
              + (Close().encode() if close else b""))
    for piece in chunked(stream, cuts):
        server.dataReceived(piece)
    assert app.messages == payloads
    assert not wire.disconnecting or close
    if close:
        server.connectionLost(Failure(ConnectionDone()))
        assert app.reason is not None and app.reason.check(ConnectionDone)
    else:
        assert app.reason is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["server", "connected server", "client"]),
       st.booleans(), st.lists(st.integers(0, 400), max_size=5))
def test_random_bytes_never_raise_out_of_dataReceived(data: bytes, where: str, pause: bool,
                                                      cuts: list[int]) -> None:
    app = Peer(pause=pause)
    connection = VIAConnection(EmulatedVIProvider(2, 64), Clock(), Given(app), None,
                               client=where == "client")
    wire = StringTransport()
    connection.makeConnection(wire)
    prefix = {"server": b"", "connected server": Handshake(CONNECT, 2, 64).encode(),
              "client": Handshake(ACCEPT, 2, 64).encode()}[where]
    stream = prefix + data
    for piece in chunked(stream, cuts):
        connection.dataReceived(piece)
    decoder = FrameDecoder(64)
    decoder.feed(stream)
    try:
        decodeAll(decoder)
    except WireError:
        assert wire.disconnecting  # garbage is never accepted
    connection.connectionLost(Failure(ConnectionDone()))
    if app.reason is not None:
        assert app.reason.check(VIAProtocolError, ConnectionDone, ConnectionLost)


# End to end, over loopback with the real reactor.


def portOf(listening: IListeningPort) -> int:
    """The port number a listening port is bound to."""
    return cast(IPv4Address, listening.getHost()).port


def closedPort() -> int:
    """A loopback TCP port nobody listens on (connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@implementer(IPushProducer)
class Flood:
    """A push producer writing a known byte sequence, a chunk per reactor turn."""

    def __init__(self, transport: VIAConnection, total: int, chunk: int) -> None:
        self.transport = transport
        self.data = random.Random(1).randbytes(total)
        self.chunk = chunk
        self.offset = 0
        self.paused = False
        self.pauses = 0
        self.maxQueued = 0
        self.firstPause: Deferred[None] = Deferred()
        self.done: Deferred[None] = Deferred()
        transport.registerProducer(self, True)
        reactor.callLater(0, self._write)

    def _write(self) -> None:
        if self.paused or self.offset >= len(self.data):
            return
        self.transport.write(self.data[self.offset:self.offset + self.chunk])
        self.offset += self.chunk
        self.maxQueued = max(self.maxQueued, self.transport.queuedBytes)
        if self.offset >= len(self.data):
            self.transport.unregisterProducer()
            self.done.callback(None)
        elif not self.paused:
            reactor.callLater(0, self._write)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1
        if not self.firstPause.called:
            self.firstPause.callback(None)

    def resumeProducing(self) -> None:
        self.paused = False
        reactor.callLater(0, self._write)

    def stopProducing(self) -> None:
        self.paused = True


def sleep(seconds: float) -> Deferred[None]:
    """Fires after C{seconds} on the real reactor."""
    done: Deferred[None] = Deferred()
    reactor.callLater(seconds, done.callback, None)
    return done


class LoopbackTests(TestCase):
    """Real sockets on 127.0.0.1."""

    provider = EmulatedVIProvider(receives=4, bufferSize=16 * 1024, sendQueue=64 * 1024)
    tcpOnly = EmulatedVIProvider(receives=4, bufferSize=16 * 1024, sendQueue=64 * 1024,
                                 local=False)

    async def listen(self, factory: Factory, provider: EmulatedVIProvider | None = None,
                     ) -> int:
        port = await VIAServerEndpoint(reactor, 0, "127.0.0.1",
                                       provider or self.provider).listen(factory)
        self.addCleanup(port.stopListening)
        return portOf(port)

    async def close(self, client: Peer, server: Peer | None = None) -> None:
        client.via.loseConnection()
        await client.lost
        if server is not None:
            await server.lost

    async def test_echo_through_the_endpoints(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))
        client = Peer()
        endpoint = VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2,
                                     provider=self.tcpOnly)
        await connectProtocol(endpoint, client)
        data = random.Random(2).randbytes(200_000)
        client.via.write(data)
        self.assertEqual(await client.received(len(data)), data)
        self.assertEqual(cast(IPv4Address, client.via.getPeer()).port, port)
        detectDeadPeers(client.via)  # reaches the socket underneath
        handle = client.via.getHandle()
        self.assertEqual(handle.family, socket.AF_INET)
        self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        await self.close(client)

    async def test_one_host_takes_the_local_path(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))
        client = Peer()
        await VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2,
                                provider=self.provider).connect(Given(client))
        self.assertEqual(client.via.getHandle().family, socket.AF_UNIX)
        self.assertTrue(client.via.local)
        # The addresses are those of the VIA path, as on TCP.
        self.assertEqual(client.via.getPeer(), IPv4Address("TCP", "127.0.0.1", port))
        data = random.Random(3).randbytes(300_000)  # many times the credit window
        client.via.write(data)
        self.assertEqual(await client.received(len(data)), data)
        # The same frames and credits: the peer's buffers cut the stream.
        self.assertEqual(client.via.maxMessageSize, self.provider.bufferSize)
        detectDeadPeers(client.via)  # TCP options do not apply, and do no harm
        await self.close(client)

    async def test_a_write_reaches_the_kernel_at_once(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))
        for provider in (self.provider, self.tcpOnly):
            client = Peer()
            await VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2,
                                    provider=provider).connect(Given(client))
            client.via.write(b"at once")
            # Not left in Twisted's buffer for the reactor's next turn.
            underneath: Any = client.via.transport
            self.assertEqual((underneath.dataBuffer, underneath._tempDataLen), (b"", 0))
            self.assertEqual(await client.received(7), b"at once")
            await self.close(client)

    async def test_the_server_side_of_the_local_path(self) -> None:
        server = Peer()
        port = await self.listen(Given(server))
        client = MessagePeer()
        await VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2,
                                provider=self.provider).connect(Given(client))
        self.assertTrue(server.via.local)
        self.assertEqual(server.via.getHandle().family, socket.AF_UNIX)
        self.assertEqual(server.via.getHost(), IPv4Address("TCP", "127.0.0.1", port))
        server.via.write(b"from the server")
        self.assertEqual(await client.received(15), b"from the server")
        await self.close(client, server)

    async def test_the_local_path_turned_off_on_the_client_takes_tcp(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))
        for endpoint in [
            VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2, provider=self.tcpOnly),
            clientFromString(reactor, f"via:127.0.0.1:{port}:local=no:timeout=2"),
        ]:
            client = Peer()
            await connectProtocol(endpoint, client)
            self.assertFalse(client.via.local)
            self.assertEqual(client.via.getHandle().family, socket.AF_INET)
            client.via.write(b"over tcp")
            self.assertEqual(await client.received(8), b"over tcp")
            await self.close(client)

    async def test_a_listener_without_a_local_path_is_reached_over_tcp(self) -> None:
        listening = await serverFromString(
            reactor, "via:0:interface=127.0.0.1:local=no").listen(Factory.forProtocol(Echo))
        self.addCleanup(listening.stopListening)
        assert isinstance(listening, VIAListeningPort)
        self.assertIsNone(listening.local)
        client = Peer()
        await connectProtocol(VIAClientEndpoint(reactor, [("127.0.0.1", portOf(listening))],
                                                timeout=2), client)
        self.assertEqual(client.via.getHandle().family, socket.AF_INET)
        client.via.write(b"silently tcp")
        self.assertEqual(await client.received(12), b"silently tcp")
        await self.close(client)

    async def test_a_local_path_that_hangs_up_falls_back_to_tcp(self) -> None:
        # Something else holds the abstract name and hangs up at once.
        via = self.tcpOnly.listen(reactor, 0, Factory.forProtocol(Echo), "127.0.0.1")
        self.addCleanup(via.stopListening)
        port = portOf(via)

        class HangUp(Protocol):
            def connectionMade(self) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]

        squatter = cast(IReactorUNIX, reactor).listenUNIX(
            localName("127.0.0.1", port), Factory.forProtocol(HangUp))
        self.addCleanup(squatter.stopListening)
        client = Peer()
        await VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2).connect(
            Given(client))
        self.assertEqual(client.via.getHandle().family, socket.AF_INET)
        client.via.write(b"fell back")
        self.assertEqual(await client.received(9), b"fell back")
        await self.close(client)

    async def test_a_refusal_on_the_local_path_is_not_retried_over_tcp(self) -> None:
        refusing = Given()
        built: list[IAddress | None] = []
        original = refusing.buildProtocol

        def counting(addr: IAddress | None) -> Protocol | None:
            built.append(addr)
            return original(addr)

        refusing.buildProtocol = counting  # type: ignore[method-assign]
        port = await self.listen(refusing)
        with self.assertRaises(VIAConnectError) as caught:
            await VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2).connect(
                Given(Peer()))
        self.assertIn("refused the connection", str(caught.exception))
        self.assertEqual(len(built), 1)

    async def test_stopping_the_listener_closes_its_local_path(self) -> None:
        listening = await VIAServerEndpoint(reactor, 0, "127.0.0.1", self.provider).listen(
            Factory.forProtocol(Echo))
        assert isinstance(listening, VIAListeningPort)
        self.assertIsNotNone(listening.local)
        name = localName("127.0.0.1", portOf(listening))
        await listening.stopListening()
        with socket.socket(socket.AF_UNIX) as probe, self.assertRaises(ConnectionRefusedError):
            probe.connect(name)

    async def test_message_boundaries(self) -> None:
        port = await self.listen(Factory.forProtocol(MessageEcho))
        client = MessagePeer()
        await VIAClientEndpoint(reactor, [("127.0.0.1", port)], provider=self.provider,
                                ).connect(Given(client))
        sent = [b"", b"one", b"\xff" * 16384, b"two", *(bytes([n]) * n for n in range(50))]
        for message in sent:
            client.via.sendMessage(message)
        await client.received(sum(map(len, sent)))
        self.assertEqual(client.messages, sent)
        await self.close(client)

    async def test_a_receiver_that_posts_no_receives_stalls_the_sender(self) -> None:
        server = Peer(pause=True)
        port = await self.listen(Given(server))
        client = Peer()
        await VIAClientEndpoint(reactor, [("127.0.0.1", port)], provider=self.provider,
                                ).connect(Given(client))
        chunk = 10_000
        flood = Flood(client.via, total=2_000_000, chunk=chunk)
        await flood.firstPause
        await sleep(0.3)  # the writer would go on; it stays paused
        self.assertEqual(client.via.credits, 0)
        self.assertLessEqual(server.via.pendingMessages, self.provider.receives)
        self.assertEqual(bytes(server.data), b"")
        self.assertLess(flood.offset, 200_000)
        self.assertLessEqual(client.via.queuedBytes, self.provider.sendQueue + chunk)
        server.via.resumeProducing()
        await flood.done
        self.assertEqual(await server.received(len(flood.data)), flood.data)
        self.assertGreaterEqual(flood.pauses, 1)
        self.assertLessEqual(flood.maxQueued, self.provider.sendQueue + chunk)
        await self.close(client, server)

    async def test_a_peer_exceeding_its_credits_is_disconnected(self) -> None:
        server = Peer(pause=True)
        port = await self.listen(Given(server))
        raw = Peer()
        await connectProtocol(clientFromString(reactor, f"tcp:127.0.0.1:{port}"), raw)
        raw.transport.write(Handshake(CONNECT, 2, 100).encode()  # type: ignore[union-attr]
                            + Data(b"x").encode() * 5)
        await server.lost
        reason = server.reason
        assert reason is not None
        self.assertTrue(reason.check(VIAProtocolError))
        self.assertEqual(str(reason.value), "VIA protocol violation: the peer sent a DATA frame "
                         "beyond its credits: all 4 posted receives hold unconsumed messages.")
        await raw.lost
        answer = bytes(raw.data)
        self.assertEqual(answer[:HANDSHAKE_SIZE], Handshake(ACCEPT, 4, 16384).encode())
        self.assertEqual(answer[HANDSHAKE_SIZE], CLOSE)
        self.assertIn(b"beyond its credits", answer)

    async def test_fail_over_from_a_dead_path(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))
        client = Peer()
        endpoint = VIAClientEndpoint(
            reactor, [("127.0.0.1", closedPort()), ("127.0.0.1", port)], timeout=2)
        await endpoint.connect(Given(client))
        self.assertEqual(cast(IPv4Address, client.via.getPeer()).port, port)
        client.via.write(b"ping")
        self.assertEqual(await client.received(4), b"ping")
        await self.close(client)

    async def test_fail_over_from_a_silent_path(self) -> None:
        quiet = ServerFactory()
        quiet.protocol = Protocol  # accepts, then says nothing
        silent = reactor.listenTCP(0, quiet, interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        port = await self.listen(Factory.forProtocol(Echo))
        client = Peer()
        started = time.monotonic()
        await VIAClientEndpoint(reactor, [("127.0.0.1", portOf(silent)), ("127.0.0.1", port)],
                                timeout=0.3).connect(Given(client))
        self.assertGreaterEqual(time.monotonic() - started, 0.25)
        self.assertEqual(cast(IPv4Address, client.via.getPeer()).port, port)
        await self.close(client)

    async def test_an_application_failing_to_start_fails_the_path(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))

        class Broken(Protocol):
            def connectionMade(self) -> None:
                raise ZeroDivisionError("broken application")

        started = time.monotonic()
        with self.assertRaises(VIAConnectError) as caught:
            await VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=5).connect(
                Factory.forProtocol(Broken))
        self.assertLess(time.monotonic() - started, 2)
        self.assertIn("broken application", str(caught.exception))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_every_path_dead(self) -> None:
        first, second = closedPort(), closedPort()
        endpoint = VIAClientEndpoint(reactor, [("127.0.0.1", first), ("127.0.0.1", second)],
                                     timeout=1)
        with self.assertRaises(VIAConnectError) as caught:
            await endpoint.connect(Given(Peer()))
        self.assertIsInstance(caught.exception, ConnectError)
        message = str(caught.exception)
        self.assertIn(f"no VIA path answered (127.0.0.1:{first}: Connection was refused", message)
        self.assertIn(f"; 127.0.0.1:{second}: Connection was refused", message)

    async def test_endpoint_for_a_port_map(self) -> None:
        port = await self.listen(Factory.forProtocol(Echo))
        self.assertIsNone(endpointFor(reactor, "127.0.0.1", InstanceInfo("H", "I", tcp=1433), 1))
        info = InstanceInfo("H", "I", via=ViaInfo("H", (ViaAddress("0", closedPort()),
                                                       ViaAddress("0", port))))
        endpoint = endpointFor(reactor, "127.0.0.1", info, 2)
        assert endpoint is not None
        client = Peer()
        await connectProtocol(endpoint, client)
        client.via.write(b"port map")
        self.assertEqual(await client.received(8), b"port map")
        await self.close(client)

    async def test_endpoint_strings(self) -> None:
        server = await serverFromString(
            reactor, "via:0:interface=127.0.0.1:receives=2:buffer_size=512").listen(
                Factory.forProtocol(MessageEcho))
        self.addCleanup(server.stopListening)
        port = portOf(server)
        endpoint = clientFromString(
            reactor, f"via:127.0.0.1:{closedPort()},127.0.0.1\\:{port}:timeout=2")
        client = MessagePeer()
        await connectProtocol(endpoint, client)
        self.assertEqual(client.via.maxMessageSize, 512)
        client.via.write(b"y" * 2000)
        await client.received(2000)
        self.assertEqual([len(m) for m in client.messages], [512, 512, 512, 464])
        await self.close(client)

    async def test_hello_verifier_over_via(self) -> None:
        port = await self.listen(HelloFactory(Factory.forProtocol(Echo), ["SALES"], reactor))
        endpoint = VIAClientEndpoint(reactor, [("127.0.0.1", port)], timeout=2)
        client = Peer()
        protocol = await HelloVerifier(reactor).connect(endpoint, Given(client), "SALES")
        self.assertIs(protocol, client)
        client.via.write(b"verified")
        self.assertEqual(await client.received(8), b"verified")
        await self.close(client)
        with self.assertRaises(WrongInstance):
            await HelloVerifier(reactor).connect(endpoint, Given(Peer()), "OTHER")


class EndpointTests(SynchronousTestCase):
    """Paths, parsers and the provider interface."""

    def test_provider_interface(self) -> None:
        self.assertTrue(verifyObject(IVIProvider, EmulatedVIProvider()))

    def test_provider_settings_are_checked(self) -> None:
        for receives, size, complaint in [(0, 10, "0 posted receives"),
                                          (1, 1 << 25, "out of range")]:
            with self.assertRaises(ValueError) as caught:
                EmulatedVIProvider(receives, size)
            self.assertIn(complaint, str(caught.exception))

    def test_numeric_nic_means_the_candidates_host(self) -> None:
        via = ViaInfo("SRV", (ViaAddress("0", 1433), ViaAddress("10.0.0.7", 1433),
                              ViaAddress("1", 1433)))
        self.assertEqual(pathsFor("192.0.2.5", via), [("192.0.2.5", 1433), ("10.0.0.7", 1433)])

    def test_client_strings(self) -> None:
        parser = VIAClientParser()
        for args, paths in [
            (("10.0.0.1", "1433"), [("10.0.0.1", 1433)]),
            (("10.0.0.1", "1433,10.0.0.2", "1434"), [("10.0.0.1", 1433), ("10.0.0.2", 1434)]),
            (("10.0.0.1:1433,10.0.0.2:1434",), [("10.0.0.1", 1433), ("10.0.0.2", 1434)]),
            (("[::1]", "1433"), [("::1", 1433)]),
        ]:
            endpoint = parser.parseStreamClient(reactor, *args, timeout="3")
            assert isinstance(endpoint, VIAClientEndpoint)
            self.assertEqual((list(endpoint.paths), endpoint.timeout), (paths, 3.0))
        endpoint = clientFromString(reactor, "via:10.0.0.1:1433:receives=2:buffer_size=99")
        assert isinstance(endpoint, VIAClientEndpoint)
        provider = cast(EmulatedVIProvider, endpoint.provider)
        self.assertEqual((provider.receives, provider.bufferSize), (2, 99))

    def test_server_strings(self) -> None:
        endpoint = serverFromString(reactor, "via:1433:interface=10.0.0.1")
        assert isinstance(endpoint, VIAServerEndpoint)
        self.assertEqual((endpoint.port, endpoint.interface), (1433, "10.0.0.1"))
        endpoint = VIAServerParser().parseStreamServer(reactor, port="99")
        assert isinstance(endpoint, VIAServerEndpoint)
        self.assertEqual((endpoint.port, endpoint.interface), (99, ""))

    def test_mistakes(self) -> None:
        parse: Callable[[str], object]
        for parse, description, complaint in [
            (lambda s: clientFromString(reactor, s), "via:", "is not ADDRESS:PORT"),
            (lambda s: clientFromString(reactor, s), "via:10.0.0.1", "is not ADDRESS:PORT"),
            (lambda s: clientFromString(reactor, s), "via:0:1433", "numeric NIC"),
            (lambda s: clientFromString(reactor, s), "via:h:1:bogus=1", "no option 'bogus'"),
            (lambda s: clientFromString(reactor, s), "via:h:1:timeout=x", "not a number"),
            (lambda s: clientFromString(reactor, s), "via:h:1:receives=0", "0 posted"),
            (lambda s: serverFromString(reactor, s), "via:x", "needs one PORT"),
            (lambda s: serverFromString(reactor, s), "via:1:2", "needs one PORT"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse(description)
            self.assertIn(complaint, str(caught.exception), description)

    def test_parse_paths(self) -> None:
        self.assertEqual(parsePaths("a:1, b:2"), [("a", 1), ("b", 2)])
        self.assertRaises(ValueError, parsePaths, "a:70000")

    def test_local_addresses(self) -> None:
        for host in ("127.0.0.1", "127.0.0.2", "::1"):
            self.assertTrue(isLocalAddress(host), host)
        for host in ("192.0.2.1", "2001:db8::1", "db.example.com", "localhost"):
            self.assertFalse(isLocalAddress(host), host)  # names are never resolved
        self.assertEqual(localNames("127.0.0.2", 1433), ["\0srp-via-127.0.0.2-1433",
                                                        "\0srp-via-0.0.0.0-1433",
                                                        "\0srp-via-::-1433"])
        self.assertEqual(localNames("::1", 1433), ["\0srp-via-::1-1433", "\0srp-via-::-1433"])
        self.assertEqual(localNames("192.0.2.1", 1433), [])

    def test_a_remote_looking_path_goes_straight_to_tcp(self) -> None:
        memory = MemoryReactorClock()
        VIAClientEndpoint(memory, [("192.0.2.1", 1433)]).connect(Given(Peer()))
        self.assertEqual(memory.unixClients, [])
        self.assertEqual([(host, port) for host, port, *_ in memory.tcpClients],
                         [("192.0.2.1", 1433)])

    def test_a_local_path_is_tried_first(self) -> None:
        memory = MemoryReactorClock()
        VIAClientEndpoint(memory, [("127.0.0.1", 1433)]).connect(Given(Peer()))
        self.assertEqual([address for address, *_ in memory.unixClients],
                         ["\0srp-via-127.0.0.1-1433"])
        self.assertEqual(memory.tcpClients, [])
        turnedOff = MemoryReactorClock()
        VIAClientEndpoint(turnedOff, [("127.0.0.1", 1433)],
                          provider=EmulatedVIProvider(local=False)).connect(Given(Peer()))
        self.assertEqual(turnedOff.unixClients, [])
        self.assertEqual(len(turnedOff.tcpClients), 1)

    def test_a_listener_listens_on_its_local_path(self) -> None:
        memory = MemoryReactorClock()
        listening = EmulatedVIProvider().listen(memory, 1433, Factory(), "127.0.0.2")
        assert isinstance(listening, VIAListeningPort)
        self.assertTrue(verifyObject(IListeningPort, listening))
        bound = cast(IPv4Address, listening.tcp.getHost())  # the memory reactor's: 0.0.0.0
        self.assertEqual(listening.getHost(), bound)
        self.assertEqual([address for address, *_ in memory.unixServers],
                         [f"\0srp-via-{bound.host}-1433"])
        EmulatedVIProvider(local=False).listen(memory, 1434, Factory(), "127.0.0.2")
        self.assertEqual(len(memory.unixServers), 1)

    def test_a_local_peer_of_another_user_is_refused(self) -> None:
        # A StringTransport has no socket, so no SO_PEERCRED: its user is unknown.
        for client in (True, False):
            app = Peer()
            connection = VIAConnection(EmulatedVIProvider(), Clock(), Given(app), None,
                                       client=client, local=True)
            errors: list[Failure] = []
            connection.accepted.addErrback(errors.append)
            wire = StringTransport()
            connection.makeConnection(wire)
            self.assertEqual(wire.value(), b"", "no handshake is sent")
            self.assertTrue(wire.disconnected)
            connection.connectionLost(Failure(ConnectionDone()))
            self.assertIsNone(app.transport)
            self.assertFalse(connection.answered)
            if client:
                [failure] = errors
                self.assertTrue(failure.check(VIAConnectError))
                self.assertIn("the local VIA peer is a process of user None", str(failure.value))

    def test_the_local_option(self) -> None:
        endpoint = clientFromString(reactor, "via:10.0.0.1:1433:local=no")
        assert isinstance(endpoint, VIAClientEndpoint)
        self.assertFalse(cast(EmulatedVIProvider, endpoint.provider).local)
        server = serverFromString(reactor, "via:1433:local=yes:receives=3")
        assert isinstance(server, VIAServerEndpoint)
        self.assertTrue(cast(EmulatedVIProvider, server.provider).local)
        with self.assertRaises(ValueError) as caught:
            clientFromString(reactor, "via:10.0.0.1:1433:local=maybe")
        self.assertIn("neither yes nor no", str(caught.exception))

    def test_abandoned_connect_is_cancelled(self) -> None:
        clock = Clock()
        connection = VIAConnection(EmulatedVIProvider(), clock, Given(Peer()), None,
                                   client=True)
        wire = StringTransport()
        connection.makeConnection(wire)
        errors: list[Failure] = []
        connection.accepted.addErrback(errors.append)
        connection.accepted.cancel()
        self.assertEqual(len(errors), 1)
        self.assertTrue(wire.disconnecting)

