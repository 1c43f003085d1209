"""
FailoverClient and the srp: endpoint's fail-over, on a Clock: no sockets,
no processes, no sleeps.  Modelled on Twisted's own ClientService tests
(twisted.application.test.test_internet): a fake endpoint whose connection
attempts the test completes, fails or leaves pending.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from srp.client.endpoint import SUSPECT_FOR, SRPClientEndpoint
from srp.client.failover import BufferFull, FailoverClient, FailoverExhausted
from srp.client.resolver import Candidate, ClusterResolver, Resolution
from srp.client.verifiers import WrongInstance
from srp.interfaces import (
    IFailoverAware,
    IFailoverEndpoint,
    IInstanceResolver,
    IInstanceVerifier,
)
from srp.wire import InstanceInfo

A = IPv4Address("TCP", "10.0.0.1", 1433)
B = IPv4Address("TCP", "10.0.0.2", 1433)
C = IPv4Address("TCP", "10.0.0.3", 1433)


class Attempt:
    """One connection attempt of a L{FakeEndpoint}, for the test to complete or fail."""

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory
        self.cancelled = False
        self.transport: StringTransportWithDisconnection | None = None
        self._place: Deferred[IAddress] = Deferred(self._cancel)
        # Built only when the attempt succeeds, as a real endpoint does: a
        # cancelled attempt connects nothing.
        self.result: Deferred[IProtocol] = self._place.addCallback(self._connected)

    def _cancel(self, _: Deferred[IAddress]) -> None:
        self.cancelled = True

    def _connected(self, place: IAddress) -> IProtocol:
        protocol = self.factory.buildProtocol(place)
        assert protocol is not None
        self.transport = StringTransportWithDisconnection(peerAddress=place)
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        return protocol

    def succeed(self, place: IAddress) -> StringTransportWithDisconnection:
        """Connect to C{place}; the transport the connection writes to."""
        self._place.callback(place)
        assert self.transport is not None
        return self.transport

    def fail(self) -> None:
        """Refuse the connection."""
        self._place.errback(ConnectionRefusedError())


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """A plain client endpoint (nothing more than IStreamClientEndpoint)."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        attempt = Attempt(factory)
        self.attempts.append(attempt)
        return attempt.result

    @property
    def pending(self) -> Attempt:
        """The last attempt, which must still be waiting."""
        attempt = self.attempts[-1]
        assert not attempt.result.called, "no attempt is pending"
        return attempt


@implementer(IFailoverEndpoint)
class SuspectingEndpoint(FakeEndpoint):
    """A fake endpoint that also provides srp's fail-over extras, and records suspicions."""

    target = "db1/SALES"

    def __init__(self) -> None:
        super().__init__()
        self.suspected: list[IAddress] = []

    def suspect(self, transport: ITransport) -> None:
        self.suspected.append(transport.getPeer())


@implementer(IFailoverAware)
class Application(Protocol):
    """The application's protocol: records everything that happens to it."""

    def __init__(self) -> None:
        self.made = 0
        self.received: list[bytes] = []
        self.moves: list[tuple[IAddress | None, IAddress]] = []
        self.lost: list[Failure] = []

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def failedOver(self, previous: IAddress | None, current: IAddress) -> None:
        self.moves.append((previous, current))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost.append(reason)


class FailoverClientTests(SynchronousTestCase):
    """L{FailoverClient} over a fake endpoint on a L{Clock}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint: FakeEndpoint = SuspectingEndpoint()
        self.app = Application()

    def start(self, **options: Any) -> tuple[FailoverClient, StringTransportWithDisconnection]:
        """A client connected to A; the transport of that connection."""
        client = FailoverClient(self.clock, self.endpoint, self.app, **options)
        connected = client.connect()
        self.assertNoResult(connected)
        transport = self.endpoint.pending.succeed(A)
        self.assertIs(self.successResultOf(connected), self.app)
        self.addCleanup(self.stop, client)
        return client, transport

    def stop(self, client: FailoverClient) -> None:
        client.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def lose(self, transport: StringTransportWithDisconnection) -> None:
        """The physical connection breaks; the client reconnects at once."""
        transport.protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.clock.advance(0)

    def write(self, data: bytes) -> None:
        assert self.app.transport is not None
        self.app.transport.write(data)

    def test_one_logical_connection(self) -> None:
        """The application is connected once and talks through the physical connection."""
        _client, transport = self.start()
        self.write(b"ping")
        self.assertEqual(transport.value(), b"ping")
        transport.protocol.dataReceived(b"pong")
        self.assertEqual((self.app.made, self.app.received), (1, [b"pong"]))
        self.assertEqual(self.app.transport.getPeer(), A)  # type: ignore[union-attr]

    def test_writes_during_failover_reach_the_next_server(self) -> None:
        client, first = self.start(bufferLimit=10)
        self.lose(first)
        self.write(b"12345")
        self.write(b"67890")  # exactly the limit: kept
        self.assertEqual(client.buffered, 10)
        second = self.endpoint.pending.succeed(B)
        self.assertEqual(second.value(), b"1234567890")
        self.assertEqual((client.buffer, client.buffered), ([], 0))
        self.assertEqual(self.app.lost, [])
        self.assertEqual(client.waitedWrites, 2)

    def test_buffer_limit(self) -> None:
        """Writing more than the buffer holds ends the connection with BufferFull."""
        client, first = self.start(bufferLimit=10)
        self.lose(first)
        self.write(b"123456")
        self.assertEqual(self.app.lost, [])
        self.write(b"78901")
        [reason] = self.app.lost
        self.assertIsInstance(reason.value, BufferFull)
        self.assertEqual(str(reason.value), "Connection to the other side was lost in a "
                         "non-clean fashion: more than 10 bytes written while no server of "
                         "db1/SALES was reachable.")
        # No more attempts: the pending one is cancelled, none is made later.
        self.assertTrue(self.endpoint.attempts[-1].cancelled)
        attempts = len(self.endpoint.attempts)
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), attempts)
        self.write(b"x")
        self.assertEqual(len(self.app.lost), 1)
        self.assertEqual(client.buffered, 6)

    def test_answer_timeout(self) -> None:
        """A server silent for answerTimeout after a write is suspected and dropped."""
        _client, first = self.start(answerTimeout=1.0)
        self.write(b"ping")
        self.clock.advance(0.999)
        self.assertFalse(first.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(first.disconnected, "aborted")
        assert isinstance(self.endpoint, SuspectingEndpoint)
        self.assertEqual(self.endpoint.suspected, [A])
        # It fails over, as for any other loss; the application sees nothing.
        self.clock.advance(0)
        self.endpoint.pending.succeed(B)
        self.assertEqual((self.app.moves, self.app.lost), ([(A, B)], []))

    def test_an_answer_keeps_the_connection(self) -> None:
        _client, first = self.start(answerTimeout=1.0)
        self.write(b"ping")
        self.clock.advance(0.5)
        first.protocol.dataReceived(b"pong")
        self.clock.advance(5)
        self.assertFalse(first.disconnecting)
        self.write(b"ping")  # a new write waits for a new answer
        self.clock.advance(1)
        self.assertTrue(first.disconnected)

    def test_no_answer_timeout(self) -> None:
        _client, first = self.start(answerTimeout=None)
        self.write(b"ping")
        self.clock.advance(3600)
        self.assertFalse(first.disconnecting)

    def test_plain_endpoint(self) -> None:
        """Any IStreamClientEndpoint will do: the silent server is dropped, not suspected."""
        self.endpoint = FakeEndpoint()
        client, first = self.start(answerTimeout=1.0, deadline=5.0)
        self.write(b"ping")
        self.clock.advance(1)
        self.assertTrue(first.disconnected)
        self.clock.advance(0)
        self.endpoint.pending.succeed(B)
        self.assertEqual(self.app.moves, [(A, B)])
        self.assertEqual(client.target, repr(self.endpoint))

    def test_deadline(self) -> None:
        """No server within the deadline: connectionLost, FailoverExhausted, once."""
        client, first = self.start(deadline=5.0)
        self.clock.advance(10)
        self.lose(first)
        # Every attempt is refused; ClientService backs off between them.
        while self.clock.seconds() < 14.999:
            if not self.endpoint.attempts[-1].result.called:
                self.endpoint.pending.fail()
            self.clock.advance(min(0.01, 14.999 - self.clock.seconds()))
        self.assertEqual(self.app.lost, [])
        self.clock.advance(0.001)
        [reason] = self.app.lost
        self.assertIsInstance(reason.value, FailoverExhausted)
        self.assertIn("no server of db1/SALES could be reached for 5 s", str(reason.value))
        attempts = len(self.endpoint.attempts)
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), attempts)
        self.assertEqual(client.failovers, 0)

    def test_deadline_with_an_attempt_pending(self) -> None:
        """An attempt that never completes is cancelled at the deadline."""
        _client, first = self.start(deadline=5.0)
        self.lose(first)
        attempt = self.endpoint.pending
        self.clock.advance(5)
        self.assertTrue(attempt.cancelled)
        [reason] = self.app.lost
        self.assertIsInstance(reason.value, FailoverExhausted)

    def test_reconnecting_before_the_deadline_cancels_it(self) -> None:
        client, first = self.start(deadline=5.0)
        self.lose(first)
        self.clock.advance(4.9)
        self.endpoint.pending.succeed(B)
        self.clock.advance(60)
        self.assertEqual(self.app.lost, [])
        self.assertEqual(client.gaps, [(0.0, 4.9)])

    def test_deadline_before_the_first_connection(self) -> None:
        client = FailoverClient(self.clock, self.endpoint, self.app, deadline=5.0)
        connected = client.connect()
        self.clock.advance(5)
        self.failureResultOf(connected, FailoverExhausted)
        self.assertEqual((self.app.made, self.app.lost), (0, []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_during_failover(self) -> None:
        """loseConnection while no server is connected ends at once, with ConnectionDone."""
        client, first = self.start(deadline=5.0)
        self.lose(first)
        self.write(b"kept")
        attempt = self.endpoint.pending
        assert self.app.transport is not None
        self.app.transport.loseConnection()
        [reason] = self.app.lost
        self.assertIsInstance(reason.value, ConnectionDone)
        self.assertTrue(attempt.cancelled)
        self.assertIsNone(attempt.transport)
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(len(self.app.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(client.link)

    def test_close_while_connected(self) -> None:
        client, first = self.start()
        self.write(b"last words")
        stopped = client.close()
        self.assertFalse(first.connected)
        self.successResultOf(stopped)
        [reason] = self.app.lost
        self.assertIsInstance(reason.value, ConnectionDone)
        self.write(b"after close")
        self.assertEqual(first.value(), b"last words")
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_failed_over_once_per_move(self) -> None:
        """failedOver is called once per move to another place, never from X to X."""
        client, transport = self.start()
        places = [A, B, B, C, A, A]
        for place in places[1:]:
            self.clock.advance(1)
            self.lose(transport)
            self.clock.advance(0.25)
            transport = self.endpoint.pending.succeed(place)
        self.assertEqual(self.app.moves, [(A, B), (B, C), (C, A)])
        self.assertEqual(client.failovers, 3)
        self.assertEqual(client.gaps, [(1.0, 0.25), (3.5, 0.25), (4.75, 0.25)])
        self.assertEqual((self.app.made, self.app.lost), (1, []))


@implementer(IInstanceResolver)
class FakeResolver:
    """
    An instance resolver with a cache: the first resolve after a purge asks
    the cluster, which gives the next of C{answers}.
    """

    def __init__(self, *answers: tuple[Candidate, ...]) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.purged = 0
        self.cached: Resolution | None = None

    def resolve(self, cluster: str, instance: str,
                addresses: Any = ()) -> Deferred[Resolution]:
        if self.cached is not None:
            return succeed(self.cached)
        self.asked += 1
        candidates = self.answers[min(self.asked, len(self.answers)) - 1]
        self.cached = Resolution(cluster, instance, candidates, True, "10.0.0.100", True)
        return succeed(Resolution(cluster, instance, candidates, True, "10.0.0.100"))

    def purge(self, cluster: str, instance: str) -> None:
        self.purged += 1
        self.cached = None


@implementer(IInstanceVerifier)
class Refuses:
    """An instance verifier for which another instance answers at C{wrong} hosts."""

    name = "fake"

    def __init__(self, *wrong: str) -> None:
        self.wrong = set(wrong)

    def forReactor(self, reactor: Any) -> Refuses:
        return self

    def connect(self, endpoint: Any, factory: IProtocolFactory,
                instance: str) -> Deferred[IProtocol]:
        def check(protocol: IProtocol) -> IProtocol:
            transport = protocol.transport  # type: ignore[attr-defined]
            if transport.getPeer().host in self.wrong:
                transport.loseConnection()
                raise WrongInstance(string="another instance answers there")
            return protocol
        connected: Deferred[IProtocol] = endpoint.connect(factory)
        return connected.addCallback(check)


def completeAttempt(reactor: MemoryReactorClock,
                    index: int) -> StringTransportWithDisconnection:
    """Complete TCP connection attempt number C{index} of C{reactor}; its transport."""
    host, port, factory, *_ = reactor.tcpClients[index]
    place = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(place)
    assert protocol is not None
    transport = StringTransportWithDisconnection(peerAddress=place)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


def refuseAttempt(reactor: MemoryReactorClock, index: int) -> None:
    """Refuse TCP connection attempt number C{index} of C{reactor}."""
    _, _, factory, *_ = reactor.tcpClients[index]
    factory.clientConnectionFailed(reactor.connectors[index], Failure(ConnectionRefusedError()))


def candidate(host: str, priority: int = 0) -> Candidate:
    return Candidate(host, InstanceInfo("H", "SALES", tcp=1433), priority)


class SRPEndpointFailoverTests(SynchronousTestCase):
    """The srp: endpoint's choice of places, on a L{MemoryReactorClock}."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver((candidate("10.0.0.1"), candidate("10.0.0.2", 1)))

    def endpoint(self, verifier: Any = None) -> SRPClientEndpoint:
        return SRPClientEndpoint(self.reactor, "db1", "SALES", self.resolver, prefer=("tcp",),
                                 verifier=verifier)

    def tried(self) -> list[str]:
        """The hosts connected to, in order."""
        return [host for host, *_ in self.reactor.tcpClients]

    def answer(self, connected: bool = True) -> None:
        """Complete (or refuse) the connection attempt made last."""
        if connected:
            completeAttempt(self.reactor, -1)
        else:
            refuseAttempt(self.reactor, -1)

    def connect(self, endpoint: SRPClientEndpoint) -> Deferred[IProtocol]:
        return endpoint.connect(Factory.forProtocol(Protocol))

    def test_interfaces(self) -> None:
        verifyObject(IFailoverEndpoint, self.endpoint())
        verifyObject(IInstanceResolver, ClusterResolver(self.reactor))
        verifyObject(IInstanceResolver, self.resolver)
        verifyObject(IInstanceVerifier, Refuses())
        self.assertEqual(self.endpoint().target, "db1/SALES")

    def test_primary_first(self) -> None:
        endpoint = self.endpoint()
        connected = self.connect(endpoint)
        self.answer()
        self.successResultOf(connected)
        self.assertEqual(self.tried(), ["10.0.0.1"])
        assert endpoint.connectedTo is not None
        self.assertEqual(endpoint.connectedTo[1].host, "10.0.0.1")

    def test_cached_place_retried_once_then_purged(self) -> None:
        """A refused cached place: purge, ask the cluster again, standby first."""
        endpoint = self.endpoint()
        self.connect(endpoint)
        self.answer()
        connected = self.connect(endpoint)
        self.answer(connected=False)
        self.assertEqual((self.resolver.asked, self.resolver.purged), (2, 1))
        self.answer()
        self.successResultOf(connected)
        self.assertEqual(self.tried(), ["10.0.0.1", "10.0.0.1", "10.0.0.2"])

    def test_suspect_ordering(self) -> None:
        """A suspected place is tried last, and not from the cache, for SUSPECT_FOR seconds."""
        endpoint = self.endpoint()
        connected = self.connect(endpoint)
        self.answer()
        endpoint.suspect(self.successResultOf(connected).transport)  # type: ignore[attr-defined]
        self.connect(endpoint)
        self.answer(connected=False)  # the standby, first now, refuses
        self.answer()  # the suspect, last, answers
        self.assertEqual(self.tried(), ["10.0.0.1", "10.0.0.2", "10.0.0.1"])
        # The cached resolution was raced, with a re-resolve beside it.
        self.assertEqual(self.resolver.asked, 2)
        # The standby failed: it is the suspect now, and the primary is fine again.
        self.reactor.advance(SUSPECT_FOR)
        self.connect(endpoint)
        self.answer()
        self.assertEqual(self.tried()[3:], ["10.0.0.1"])

    def test_suspicion_expires(self) -> None:
        endpoint = self.endpoint()
        connected = self.connect(endpoint)
        self.answer()
        endpoint.suspect(self.successResultOf(connected).transport)  # type: ignore[attr-defined]
        self.reactor.advance(SUSPECT_FOR - 0.001)
        self.connect(endpoint)
        self.assertEqual(self.tried()[1:], ["10.0.0.2"])
        self.answer()
        self.reactor.advance(SUSPECT_FOR)
        self.connect(endpoint)
        self.assertEqual(self.tried()[2:], ["10.0.0.1"])

    def test_suspect_names_the_connection(self) -> None:
        """
        A late report on an old connection suspects that connection's place,
        not the place connected last.
        """
        endpoint = self.endpoint()
        old = self.connect(endpoint)
        self.answer()
        oldTransport = self.successResultOf(old).transport  # type: ignore[attr-defined]
        endpoint.suspect(oldTransport)
        self.connect(endpoint)
        self.answer()
        self.assertEqual(self.tried(), ["10.0.0.1", "10.0.0.2"])
        self.reactor.advance(SUSPECT_FOR)
        endpoint.suspect(oldTransport)
        self.connect(endpoint)
        self.answer()
        self.assertEqual(self.tried()[2:], ["10.0.0.2"])

    def test_stale_instance_is_purged(self) -> None:
        """Another instance at the cached place: purge, resolve again, go where it went."""
        self.resolver = FakeResolver((candidate("10.0.0.1"),), (candidate("10.0.0.3"),))
        verifier = Refuses()
        endpoint = self.endpoint(verifier)
        self.connect(endpoint)
        self.answer()
        verifier.wrong.add("10.0.0.1")
        connected = self.connect(endpoint)
        self.answer()  # reaches 10.0.0.1, where another instance answers
        self.assertEqual(self.resolver.asked, 2)
        self.answer()
        protocol = self.successResultOf(connected)
        self.assertEqual(protocol.transport.getPeer().host, "10.0.0.3")  # type: ignore[attr-defined]
        self.assertEqual(self.tried(), ["10.0.0.1", "10.0.0.1", "10.0.0.3"])
        assert endpoint.connectedTo is not None
        self.assertEqual(endpoint.connectedTo[1].host, "10.0.0.3")
        self.assertIsNotNone(self.resolver.cached)
