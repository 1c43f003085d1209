"""
L{srp.transports.splice}: client-first bytes are held until the backend is
up, then both directions flow; failures close the other side with a log line;
a client that leaves unanswered has its backend's place suspected.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from srp.interfaces import IFailoverEndpoint
from srp.transports.splice import (
    MAX_HELD,
    MAX_ORPHANS,
    SplicedClient,
    SpliceFactory,
    relayFactory,
)

CLIENT = IPv4Address("TCP", "127.0.0.1", 50000)


@implementer(IStreamClientEndpoint)
class ControlledEndpoint:
    """An endpoint whose connections complete when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[IProtocolFactory, Deferred[IProtocol]]] = []
        self.cancelled = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def cancel(d: Deferred[IProtocol]) -> None:
            self.cancelled += 1

        d: Deferred[IProtocol] = Deferred(cancel)
        self.pending.append((factory, d))
        return d

    def succeed(self) -> StringTransport:
        """Complete the oldest connection; return the backend's transport."""
        factory, d = self.pending.pop(0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1433))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return transport

    def fail(self) -> None:
        """Fail the oldest connection as a refused TCP connect does."""
        _, d = self.pending.pop(0)
        d.errback(Failure(ConnectionRefusedError("refused")))


@implementer(IFailoverEndpoint)
class SuspectingEndpoint(ControlledEndpoint):
    """A L{ControlledEndpoint} that records the transports it is told failed."""

    target = "db1/SALES"

    def __init__(self) -> None:
        super().__init__()
        self.suspected: list[ITransport] = []

    def suspect(self, transport: ITransport) -> None:
        self.suspected.append(transport)


class SpliceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.endpoint = ControlledEndpoint()
        self.factory: SpliceFactory = relayFactory(self.endpoint, "relay of SALES")
        client = self.factory.buildProtocol(CLIENT)
        assert client is not None
        self.client: SplicedClient = client
        self.clientTransport = StringTransport(peerAddress=CLIENT)
        self.client.makeConnection(self.clientTransport)

    def test_bytes_before_the_backend_is_up_are_delivered_in_order(self) -> None:
        self.client.dataReceived(b"\x12\x01\x00\x2f")
        self.client.dataReceived(b"PRELOGIN-REST")
        backend = self.endpoint.succeed()
        self.assertEqual(backend.value(), b"\x12\x01\x00\x2fPRELOGIN-REST")
        self.client.dataReceived(b"LOGIN7")
        self.assertEqual(backend.value(), b"\x12\x01\x00\x2fPRELOGIN-RESTLOGIN7")
        self.assertEqual(self.factory.stats.bytesUp, 23)
        self.assertEqual(self.factory.stats.spliced, 1)

    def test_backend_bytes_reach_the_client(self) -> None:
        self.endpoint.succeed()
        backendSide = self.client.backend
        assert backendSide is not None
        backendSide.dataReceived(b"\x04\x01answer")
        self.assertEqual(self.clientTransport.value(), b"\x04\x01answer")
        self.assertEqual(self.factory.stats.bytesDown, 8)

    def test_each_side_is_the_producer_of_the_other(self) -> None:
        backend = self.endpoint.succeed()
        self.assertIs(self.clientTransport.producer, backend)
        self.assertIs(backend.producer, self.clientTransport)

    def test_a_refused_backend_closes_the_client_with_a_log_line(self) -> None:
        self.client.dataReceived(b"PRELOGIN")
        with capturedLogs() as events:
            self.endpoint.fail()
        self.assertTrue(self.clientTransport.disconnecting)
        self.assertEqual(self.factory.stats.failed, 1)
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(event["name"], "relay of SALES")
        self.assertIn("refused", event["error"])

    def test_too_many_early_bytes_close_the_client(self) -> None:
        with capturedLogs() as events:
            self.client.dataReceived(b"x" * MAX_HELD)
            self.assertFalse(self.clientTransport.disconnecting)
            self.client.dataReceived(b"x")
        self.assertTrue(self.clientTransport.disconnecting)
        self.assertEqual(self.factory.stats.overflowed, 1)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.warn]), 1)

    def test_client_gone_before_the_backend_leaves_the_attempt_to_end(self) -> None:
        """
        The attempt runs on, so that a place too slow for the client is still
        found failed; when it connects after all, that connection is closed.
        """
        self.client.dataReceived(b"PRELOGIN")
        with capturedLogs() as events:
            self.client.connectionLost(Failure(ConnectionRefusedError()))
            self.assertEqual((self.endpoint.cancelled, self.factory.stats.orphans), (0, 1))
            backend = self.endpoint.succeed()
        self.assertTrue(backend.disconnecting)
        self.assertEqual(backend.value(), b"")
        self.assertEqual((self.factory.stats.orphans, self.factory.stats.spliced), (0, 0))
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])

    def test_an_orphan_attempt_that_fails_is_not_counted_as_a_failure(self) -> None:
        self.client.connectionLost(Failure(ConnectionRefusedError()))
        with capturedLogs() as events:
            self.endpoint.fail()
        self.assertEqual((self.factory.stats.orphans, self.factory.stats.failed), (0, 0))
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])

    def test_orphans_beyond_the_bound_are_cancelled(self) -> None:
        self.factory.stats.orphans = MAX_ORPHANS
        self.client.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual((self.endpoint.cancelled, self.factory.stats.orphans),
                         (1, MAX_ORPHANS))

    def suspecting(self) -> tuple[SuspectingEndpoint, SpliceFactory, SplicedClient,
                                  StringTransport]:
        """A client accepted by a proxy whose endpoint records what it is told failed."""
        endpoint = SuspectingEndpoint()
        factory = relayFactory(endpoint, "proxy")
        client = factory.buildProtocol(CLIENT)
        assert client is not None
        transport = StringTransport(peerAddress=CLIENT)
        client.makeConnection(transport)
        return endpoint, factory, client, transport

    def test_a_client_leaving_unanswered_suspects_its_place(self) -> None:
        """Bytes up and nothing back, then the client leaves: the driver timed out."""
        endpoint, factory, client, _ = self.suspecting()
        backend = endpoint.succeed()
        client.dataReceived(b"SELECT 1")
        client.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(endpoint.suspected, [backend])
        self.assertEqual(factory.stats.abandoned, 1)
        self.assertTrue(backend.disconnecting)

    def test_a_client_leaving_answered_suspects_nothing(self) -> None:
        endpoint, factory, client, _ = self.suspecting()
        endpoint.succeed()
        client.dataReceived(b"SELECT 1")
        assert client.backend is not None
        client.backend.dataReceived(b"1")
        client.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual((endpoint.suspected, factory.stats.abandoned), ([], 0))

    def test_a_server_closing_its_connection_suspects_its_place(self) -> None:
        endpoint, factory, client, clientTransport = self.suspecting()
        backend = endpoint.succeed()
        assert client.backend is not None
        client.backend.connectionLost(None)
        self.assertEqual((endpoint.suspected, factory.stats.dropped), ([backend], 1))
        self.assertTrue(clientTransport.disconnecting)
        # The client's side closing then closes nothing more and suspects nothing more.
        client.connectionLost(None)
        self.assertEqual(endpoint.suspected, [backend])

    def test_closing_the_backend_for_a_client_that_left_suspects_nothing(self) -> None:
        endpoint, factory, client, _ = self.suspecting()
        endpoint.succeed()
        backendSide = client.backend
        assert backendSide is not None
        client.connectionLost(None)
        backendSide.connectionLost(None)
        self.assertEqual((endpoint.suspected, factory.stats.dropped), ([], 0))

    def test_a_plain_endpoint_is_not_told_but_the_client_is_counted(self) -> None:
        backend = self.endpoint.succeed()
        self.client.dataReceived(b"SELECT 1")
        self.client.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.factory.stats.abandoned, 1)
        self.assertTrue(backend.disconnecting)

    def test_client_gone_closes_the_backend(self) -> None:
        backend = self.endpoint.succeed()
        self.client.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(backend.disconnecting)

    def test_backend_gone_closes_the_client(self) -> None:
        self.endpoint.succeed()
        assert self.client.backend is not None
        self.client.backend.connectionLost(None)
        self.assertTrue(self.clientTransport.disconnecting)
