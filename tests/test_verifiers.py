"""Instance verification (figure 3, steps 315-319) with real loopback connections."""

from __future__ import annotations

import contextlib
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort, IProtocol
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.trial.unittest import TestCase

from srp.client.endpoint import SRPClientEndpoint
from srp.client.resolver import ClusterResolver
from srp.client.verifiers import HelloVerifier, TDSVerifier, WrongInstance
from srp.records import InstanceInfo, Registration
from srp.server.config import NodeConfig
from srp.server.hello import HelloFactory
from srp.server.node import NodeService
from srp.testing.processes import freeLoopbackAddress
from srp.testing.tds import preloginServer
from srp.wire.errors import WireError
from srp.wire.tds import (
    INSTOPT,
    PRELOGIN,
    TABULAR_RESULT,
    Prelogin,
    decodePrelogin,
    preloginRequest,
    preloginResponse,
    requestedInstance,
)


@given(st.lists(st.tuples(st.integers(0, 0xFE), st.binary(max_size=40)), max_size=6))
def test_prelogin_round_trip(options: list[tuple[int, bytes]]) -> None:
    prelogin = Prelogin(tuple(options))
    assert decodePrelogin(prelogin.encode(PRELOGIN), PRELOGIN) == prelogin


@given(st.binary(max_size=200))
def test_prelogin_decoder_raises_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decodePrelogin(data, PRELOGIN)


def test_prelogin_layout() -> None:
    request = preloginRequest("SALES")
    assert request[:2] == b"\x12\x01" and int.from_bytes(request[2:4], "big") == len(request)
    assert requestedInstance(decodePrelogin(request, PRELOGIN)) == "SALES"
    assert decodePrelogin(preloginResponse(False), TABULAR_RESULT).get(INSTOPT) == b"\x01"


def portOf(listening: IListeningPort) -> int:
    """The port number a listening port is bound to."""
    return cast(IPv4Address, listening.getHost()).port


def close(protocol: IProtocol) -> None:
    """Close the connection of a connected protocol."""
    cast(Protocol, protocol).transport.loseConnection()  # type: ignore[union-attr]


class Recorder(Protocol):
    """The application's protocol: records what it receives."""

    def __init__(self) -> None:
        self.received = b""
        self.arrived: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.arrived.called:
            self.arrived.callback(data)


class Echo(Protocol):
    def connectionMade(self) -> None:
        self.factory.seen.append(b"")

    def dataReceived(self, data: bytes) -> None:
        self.factory.seen[-1] += data
        self.transport.write(data)  # type: ignore[union-attr]


def echoFactory() -> ServerFactory:
    factory = ServerFactory()
    factory.protocol = Echo
    factory.seen = []  # type: ignore[attr-defined]
    return factory


class VerifierTests(TestCase):
    def listen(self, factory: Any) -> TCP4ClientEndpoint:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", portOf(port))

    async def test_tds_accepts_the_named_instance(self) -> None:
        endpoint = self.listen(preloginServer("SALES"))
        protocol = await TDSVerifier(reactor).connect(
            endpoint, Factory.forProtocol(Recorder), "sales")
        self.assertIsInstance(protocol, Recorder)
        close(protocol)

    async def test_tds_refuses_another_instance(self) -> None:
        endpoint = self.listen(preloginServer("SALES"))
        with self.assertRaises(WrongInstance) as caught:
            await TDSVerifier(reactor).connect(endpoint, Factory.forProtocol(Recorder), "HR")
        self.assertIn("not instance HR", str(caught.exception))

    async def test_hello_is_invisible_to_both_applications(self) -> None:
        server = echoFactory()
        endpoint = self.listen(HelloFactory(server, ["SALES"]))
        app = await HelloVerifier(reactor).connect(endpoint, Factory.forProtocol(Recorder),
                                                   "SALES")
        assert isinstance(app, Recorder)
        app.transport.write(b"ping")  # type: ignore[union-attr]
        self.assertEqual(await app.arrived, b"ping")
        self.assertEqual(server.seen, [b"ping"])  # type: ignore[attr-defined]
        app.transport.loseConnection()  # type: ignore[union-attr]

    async def test_hello_refuses_another_instance(self) -> None:
        endpoint = self.listen(HelloFactory(echoFactory(), ["SALES"]))
        with self.assertRaises(WrongInstance):
            await HelloVerifier(reactor).connect(endpoint, Factory.forProtocol(Recorder), "HR")

    async def test_hello_to_a_listener_without_srp(self) -> None:
        endpoint = self.listen(echoFactory())
        with self.assertRaises(WrongInstance) as caught:
            await HelloVerifier(reactor).connect(endpoint, Factory.forProtocol(Recorder), "X")
        self.assertIn("does not speak srp's hello", str(caught.exception))

    async def test_clients_without_hello_reach_the_application(self) -> None:
        server = echoFactory()
        endpoint = self.listen(HelloFactory(server, ["SALES"]))
        app = Recorder()
        await connectProtocol(endpoint, app)
        app.transport.write(b"GET / HTTP/1.0\r\n")  # type: ignore[union-attr]
        self.assertEqual(await app.arrived, b"GET / HTTP/1.0\r\n")
        app.transport.loseConnection()  # type: ignore[union-attr]


class StaleCacheTests(TestCase):
    """Steps 315-319: the cached port now serves another instance."""

    async def test_stale_entry_is_purged_resolved_again_and_connected_right(self) -> None:
        address = freeLoopbackAddress()
        first = reactor.listenTCP(0, HelloFactory(echoFactory(), ["SALES"]), interface=address)
        oldPort = portOf(first)
        node = NodeService(NodeConfig(listen=(address,), instances=(
            Registration(InstanceInfo("H", "SALES", tcp=oldPort)),)), reactor)
        node.privilegedStartService()
        node.startService()
        self.addCleanup(node.stopService)
        resolver = ClusterResolver(reactor)
        endpoint = SRPClientEndpoint(reactor, address, "SALES", resolver,
                                     verifier=HelloVerifier(reactor))
        app = await endpoint.connect(Factory.forProtocol(Recorder))
        close(app)
        # SALES moves; its old port now belongs to HR.
        moved = reactor.listenTCP(0, HelloFactory(echoFactory(), ["SALES"]), interface=address)
        self.addCleanup(moved.stopListening)
        await maybeDeferred(first.stopListening)
        squatter = reactor.listenTCP(oldPort, HelloFactory(echoFactory(), ["HR"]),
                                     interface=address)
        self.addCleanup(squatter.stopListening)
        node.registry.register(Registration(InstanceInfo("H", "SALES",
                                                         tcp=portOf(moved))))
        sent = resolver.sent
        app = await endpoint.connect(Factory.forProtocol(Recorder))
        assert endpoint.connectedTo is not None
        self.assertEqual(endpoint.connectedTo[1].info.tcp, portOf(moved))
        self.assertEqual(resolver.sent, sent + 1, "resolved again after the stale hit")
        close(app)
