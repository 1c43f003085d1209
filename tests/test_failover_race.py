"""
The fast path: when the place in use fails, the srp: endpoint races the
places its cached resolution already lists while a re-resolve runs beside
them.  A L{FailoverClient} over an L{SRPClientEndpoint} on a
L{MemoryReactorClock}: no sockets, no sleeps.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from srp.client.endpoint import SRPClientEndpoint
from srp.client.failover import FailoverClient, FailoverExhausted
from srp.client.race import PREFER_FOR, CandidateRace
from srp.client.resolver import Candidate, ClusterSilent, Resolution
from srp.interfaces import IInstanceResolver
from tests.test_failover import Application, candidate, completeAttempt, refuseAttempt

PRIMARY, STANDBY, MOVED = "10.0.0.1", "10.0.0.2", "10.0.0.3"


@implementer(IInstanceResolver)
class SlowResolver:
    """
    A resolver whose first resolve is answered at once and cached; each
    resolve after a purge waits for the test to L{answer} it.
    """

    def __init__(self, *candidates: Candidate) -> None:
        self.cached: Resolution | None = Resolution("db1", "SALES", candidates, True,
                                                    "10.0.0.100", cached=True)
        self.pending: list[Deferred[Resolution]] = []
        self.purged = 0

    def resolve(self, cluster: str, instance: str, addresses: Any = ()) -> Deferred[Resolution]:
        if self.cached is not None:
            return succeed(self.cached)
        waiter: Deferred[Resolution] = Deferred()
        self.pending.append(waiter)
        return waiter

    def purge(self, cluster: str, instance: str) -> None:
        self.purged += 1
        self.cached = None

    def answer(self, *candidates: Candidate) -> None:
        """The cluster answers the pending re-resolve with C{candidates}."""
        resolution = Resolution("db1", "SALES", candidates, True, "10.0.0.100")
        self.cached = Resolution("db1", "SALES", candidates, True, "10.0.0.100", True)
        self.pending.pop(0).callback(resolution)

    def silent(self) -> None:
        """The pending re-resolve fails: the cluster does not answer."""
        self.pending.pop(0).errback(ClusterSilent("no answer"))


class RaceTests(SynchronousTestCase):
    """The place in use fails: the standbys known are tried at once."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = SlowResolver(candidate(PRIMARY), candidate(STANDBY, 1))
        self.endpoint = SRPClientEndpoint(self.reactor, "db1", "SALES", self.resolver,
                                          prefer=("tcp",))
        self.app = Application()
        self.client = FailoverClient(self.reactor, self.endpoint, self.app, deadline=5.0)
        self.client.connect()
        self.first = self.answer(0)
        self.assertEqual(self.app.made, 1)

    def tried(self) -> list[str]:
        """The hosts connected to, in order."""
        return [host for host, *_ in self.reactor.tcpClients]

    def answer(self, index: int) -> StringTransportWithDisconnection:
        """Complete connection attempt number C{index}."""
        return completeAttempt(self.reactor, index)

    def refuse(self, index: int) -> None:
        """Refuse connection attempt number C{index}."""
        refuseAttempt(self.reactor, index)

    def lose(self) -> None:
        """The connection in use breaks; the client reconnects at once."""
        self.first.protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.reactor.advance(0)

    def test_known_standby_wins_before_the_re_resolve(self) -> None:
        self.lose()
        # The standby at once, the failed primary not, and a re-resolve beside.
        self.assertEqual(self.tried(), [PRIMARY, STANDBY])
        self.assertEqual(len(self.resolver.pending), 1)
        self.answer(1)
        self.assertEqual(self.app.moves, [(IPv4Address("TCP", PRIMARY, 1433),
                                           IPv4Address("TCP", STANDBY, 1433))])
        # The re-resolve answers later: it refreshes the cache, it connects nothing.
        self.resolver.answer(candidate(PRIMARY), candidate(STANDBY, 1))
        self.reactor.advance(1)
        self.assertEqual(self.tried(), [PRIMARY, STANDBY])
        self.assertEqual((self.client.failovers, len(self.app.moves), self.app.lost),
                         (1, 1, []))
        self.assertEqual(self.client.gaps, [(0.0, 0.0)])

    def test_re_resolve_wins_when_the_standby_is_dead_too(self) -> None:
        self.lose()
        self.refuse(1)
        self.assertEqual(self.tried(), [PRIMARY, STANDBY])  # waits for the re-resolve
        self.reactor.advance(0.3)
        self.resolver.answer(candidate(MOVED), candidate(STANDBY, 1))
        self.assertEqual(self.tried(), [PRIMARY, STANDBY, MOVED])
        self.answer(2)
        self.assertEqual([current.host for _, current in self.app.moves],  # type: ignore[attr-defined]
                         [MOVED])
        self.assertEqual(self.client.gaps, [(0.0, 0.3)])

    def test_a_refused_attempt_races_the_rest(self) -> None:
        """A new connection whose cached place refuses: the standby at once, re-resolving."""
        connected = self.endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(self.tried(), [PRIMARY, PRIMARY])
        self.refuse(1)
        self.assertEqual((self.tried(), len(self.resolver.pending)),
                         ([PRIMARY, PRIMARY, STANDBY], 1))
        self.answer(2)
        self.assertEqual(self.successResultOf(connected).transport.getPeer().host,  # type: ignore[attr-defined]
                         STANDBY)
        self.assertEqual(self.resolver.purged, 1)

    def test_losers_are_cancelled(self) -> None:
        """
        Every known place starts at once; the first connected wins (once the
        better place still connecting had PREFER_FOR to connect), the others stop.
        """
        self.resolver.cached = Resolution(
            "db1", "SALES", (candidate(PRIMARY), candidate(STANDBY, 1), candidate(MOVED, 2)),
            True, "10.0.0.100", True)
        self.lose()
        self.assertEqual(self.tried(), [PRIMARY, STANDBY, MOVED])
        self.answer(2)
        self.reactor.advance(PREFER_FOR)
        self.assertTrue(self.reactor.connectors[1].stoppedConnecting)
        self.assertFalse(self.reactor.connectors[2].stoppedConnecting)
        self.assertEqual(self.client.failovers, 1)
        assert self.endpoint.connectedTo is not None
        self.assertEqual(self.endpoint.connectedTo[1].host, MOVED)

    def threeStandbys(self) -> None:
        """The cache lists the primary and two standbys, of priority 1 and 2."""
        self.resolver.cached = Resolution(
            "db1", "SALES", (candidate(PRIMARY), candidate(STANDBY, 1), candidate(MOVED, 2)),
            True, "10.0.0.100", True)

    def test_the_better_standby_wins_though_a_worse_one_connected_first(self) -> None:
        """
        Both standbys are alive: the one of priority 2 connecting a moment
        sooner does not take the connection from the one of priority 1.
        """
        self.threeStandbys()
        self.lose()
        self.client.transport.write(b"request")
        worse = self.answer(2)
        self.reactor.advance(PREFER_FOR / 2)
        self.assertEqual((self.app.moves, worse.value()), ([], b""))
        better = self.answer(1)
        self.assertEqual(self.app.moves, [(IPv4Address("TCP", PRIMARY, 1433),
                                           IPv4Address("TCP", STANDBY, 1433))])
        self.assertEqual((better.value(), worse.value(), worse.connected),
                         (b"request", b"", False))
        assert self.endpoint.connectedTo is not None
        self.assertEqual(self.endpoint.connectedTo[1].host, STANDBY)
        self.assertEqual((self.client.failovers, self.client.gaps), (1, [(0.0, PREFER_FOR / 2)]))

    def test_a_worse_standby_wins_at_once_when_the_better_one_fails(self) -> None:
        self.threeStandbys()
        self.lose()
        self.answer(2)
        self.assertEqual(self.app.moves, [])
        self.refuse(1)
        self.assertEqual([current.host for _, current in self.app.moves],  # type: ignore[attr-defined]
                         [MOVED])
        self.assertEqual(self.client.gaps, [(0.0, 0.0)])

    def test_a_better_standby_that_stays_silent_is_waited_for_PREFER_FOR(self) -> None:
        self.threeStandbys()
        self.lose()
        self.answer(2)
        self.reactor.advance(PREFER_FOR - 0.001)
        self.assertEqual(self.app.moves, [])
        self.reactor.advance(0.001)
        self.assertTrue(self.reactor.connectors[1].stoppedConnecting)
        self.assertEqual([current.host for _, current in self.app.moves],  # type: ignore[attr-defined]
                         [MOVED])
        self.assertEqual(self.client.gaps, [(0.0, PREFER_FOR)])

    def test_a_dead_place_is_tried_last(self) -> None:
        """After a fail-over the failed primary is suspect: not retried first."""
        self.lose()
        second = self.answer(1)
        self.resolver.answer(candidate(PRIMARY), candidate(STANDBY, 1))
        second.protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.reactor.advance(0)
        # Both suspect now: the re-resolve is waited for, then both, best first.
        self.assertEqual(self.tried(), [PRIMARY, STANDBY])
        self.resolver.answer(candidate(PRIMARY), candidate(STANDBY, 1))
        self.assertEqual(self.tried(), [PRIMARY, STANDBY, PRIMARY, STANDBY])

    def test_both_dead_gives_up_after_the_deadline(self) -> None:
        self.lose()
        refused = 1  # the first attempt connected
        while self.reactor.seconds() < 4.999:
            while refused < len(self.reactor.tcpClients):
                self.refuse(refused)
                refused += 1
            while self.resolver.pending:
                self.resolver.silent()
            self.reactor.advance(min(0.01, 4.999 - self.reactor.seconds()))
        self.assertEqual((self.app.lost, self.client.failovers), ([], 0))
        self.reactor.advance(0.001)
        [reason] = self.app.lost
        self.assertIsInstance(reason.value, FailoverExhausted)
        self.assertEqual(set(self.tried()), {PRIMARY, STANDBY})
        attempts = len(self.tried())
        self.reactor.advance(100)
        self.assertEqual(len(self.tried()), attempts)


class CandidateRaceTests(SynchronousTestCase):
    """L{CandidateRace} on its own."""

    def test_cancelling_the_race_cancels_every_attempt(self) -> None:
        attempts: list[Deferred[Any]] = []

        def attempt(_: Candidate) -> Deferred[Any]:
            attempts.append(Deferred())
            return attempts[-1]

        race = CandidateRace(attempt)
        race.start([candidate(PRIMARY), candidate(STANDBY), candidate(PRIMARY)])
        self.assertEqual(len(attempts), 2)
        race.done.cancel()
        self.assertEqual([a.called for a in attempts], [True, True])
        self.failureResultOf(race.done)

    def race(self, clock: Clock | None) -> tuple[CandidateRace, dict[str, Deferred[Any]]]:
        """A race of three places of priority 0, 1 and 2, whose attempts the test fires."""
        attempts: dict[str, Deferred[Any]] = {}

        def attempt(c: Candidate) -> Deferred[Any]:
            attempts[c.host] = Deferred()
            return attempts[c.host]

        race = CandidateRace(attempt, clock=clock)
        race.start([candidate(PRIMARY), candidate(STANDBY, 1), candidate(MOVED, 2)])
        return race, attempts

    def connected(self) -> tuple[Protocol, StringTransport]:
        """A protocol connected to a string transport, and the transport."""
        protocol, transport = Protocol(), StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_the_best_place_connected_in_time_wins(self) -> None:
        clock = Clock()
        race, attempts = self.race(clock)
        (worst, worstLine), (worse, worseLine), (best, bestLine) = (
            self.connected(), self.connected(), self.connected())
        attempts[MOVED].callback(worst)
        attempts[STANDBY].callback(worse)
        self.assertNoResult(race.done)
        self.assertEqual((worstLine.disconnecting, worseLine.disconnecting), (True, False))
        clock.advance(PREFER_FOR - 0.001)
        attempts[PRIMARY].callback(best)
        self.assertIs(self.successResultOf(race.done), best)
        self.assertEqual((worseLine.disconnecting, bestLine.disconnecting), (True, False))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_the_best_held_wins_after_PREFER_FOR(self) -> None:
        clock = Clock()
        race, attempts = self.race(clock)
        worse, line = self.connected()
        attempts[STANDBY].callback(worse)
        clock.advance(PREFER_FOR)
        self.assertIs(self.successResultOf(race.done), worse)
        self.assertFalse(line.disconnecting)
        # Cancelled: the race's own callback took the CancelledError.
        self.assertEqual((attempts[PRIMARY].called, attempts[MOVED].called, race.running),
                         (True, True, False))

    def test_cancelling_closes_the_place_held(self) -> None:
        clock = Clock()
        race, attempts = self.race(clock)
        worse, line = self.connected()
        attempts[STANDBY].callback(worse)
        race.done.cancel()
        self.failureResultOf(race.done, CancelledError)
        self.assertTrue(line.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_without_a_clock_the_first_connected_wins(self) -> None:
        race, attempts = self.race(None)
        worse, _ = self.connected()
        attempts[MOVED].callback(worse)
        self.assertIs(self.successResultOf(race.done), worse)

    def test_lost_when_closed_and_every_attempt_failed(self) -> None:
        idle: list[bool] = []
        race = CandidateRace(lambda _: succeed(None), whenIdle=lambda: idle.append(True))
        race.start([candidate(PRIMARY)])
        self.assertEqual((race.done.called, idle), (False, [True]))
        race.close()
        self.assertIsNone(self.successResultOf(race.done))
