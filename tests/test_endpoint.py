"""The `srp:` endpoint, against an in-process node and TCP server on loopback."""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from srp.client.endpoint import ResolutionError, SRPClientEndpoint, SRPClientParser
from srp.records import Registration
from srp.server.config import NodeConfig
from srp.server.node import NodeService
from srp.testing.processes import freeLoopbackAddress
from srp.wire import InstanceInfo


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Collect(Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected:
            self.done.callback(self.received)


class EndpointTests(TestCase):
    """`srp:cluster/instance` resolves over UDP and connects over TCP."""

    def setUp(self) -> None:
        self.address = freeLoopbackAddress()
        factory = ServerFactory()
        factory.protocol = Echo
        server = reactor.listenTCP(0, factory, interface=self.address)
        self.addCleanup(server.stopListening)
        port: int = server.getHost().port  # type: ignore[attr-defined]
        records = (
            Registration(InstanceInfo("H", "ECHO", tcp=port)),
            Registration(InstanceInfo("H", "PIPEONLY", np="\\\\H\\pipe\\x")),
        )
        node = NodeService(NodeConfig(listen=(self.address,), instances=records), reactor)
        node.privilegedStartService()
        node.startService()
        self.addCleanup(node.stopService)

    async def test_connects_to_the_announced_port(self) -> None:
        endpoint = clientFromString(reactor, f"srp:{self.address}/echo:timeout=1")
        self.assertIsInstance(endpoint, SRPClientEndpoint)
        client = Collect(5)
        await connectProtocol(endpoint, client)
        client.transport.write(b"hello")  # type: ignore[union-attr]
        self.assertEqual(await client.done, b"hello")
        handle = client.transport.getHandle()  # type: ignore[union-attr]
        self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), 3000)
        self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 1)
        client.transport.loseConnection()  # type: ignore[union-attr]

    async def test_unknown_instance_is_a_resolution_error(self) -> None:
        endpoint = clientFromString(reactor, f"srp:{self.address}/NOPE:timeout=0.3")
        with self.assertRaises(ResolutionError) as caught:
            await connectProtocol(endpoint, Protocol())
        self.assertIn(f"cannot resolve {self.address}/NOPE: cluster {self.address} has no live "
                      "registration of NOPE", str(caught.exception))

    async def test_instance_without_a_usable_transport(self) -> None:
        endpoint = clientFromString(reactor, f"srp:{self.address}/PIPEONLY:timeout=1:prefer=tcp")
        with self.assertRaises(ResolutionError) as caught:
            await connectProtocol(endpoint, Protocol())
        self.assertIn("offers none of the transports tcp that this client can use",
                      str(caught.exception))

    async def test_a_pipe_nobody_serves_is_said(self) -> None:
        endpoint = clientFromString(reactor, f"srp:{self.address}/PIPEONLY:timeout=1")
        with self.assertRaises(ResolutionError) as caught:
            await connectProtocol(endpoint, Protocol())
        self.assertIn(f"could be reached: np {self.address}", str(caught.exception))


class ParserTests(SynchronousTestCase):
    """The endpoint string is checked when parsed."""

    def test_options(self) -> None:
        endpoint = SRPClientParser().parseStreamClient(reactor, "::1/X", port="1435",
                                                       timeout="3")
        assert isinstance(endpoint, SRPClientEndpoint)
        self.assertEqual((endpoint.cluster, endpoint.instance, endpoint.timeout),
                         ("::1", "X", 3.0))
        self.assertEqual(endpoint.resolver.port, 1435)  # type: ignore[union-attr]

    def test_ipv6_cluster_escaped(self) -> None:
        endpoint = clientFromString(reactor, "srp:\\:\\:1/SALES")
        assert isinstance(endpoint, SRPClientEndpoint)
        self.assertEqual((endpoint.cluster, endpoint.instance), ("::1", "SALES"))

    def test_mistakes(self) -> None:
        for description, complaint in [
            ("srp:db1", "needs CLUSTER/INSTANCE"),
            ("srp:db1/X:bogus=1", "no option 'bogus'"),
            ("srp:db1/" + "X" * 33, "at most 32"),
        ]:
            with self.assertRaises(ValueError) as caught:
                clientFromString(reactor, description)
            self.assertIn(complaint, str(caught.exception), description)
