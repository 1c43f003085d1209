"""
L{srp.client.proxy}, deterministically: a proxy listener on a memory reactor
whose connections go through a real C{srp:} endpoint to places a fake
resolver names; the test decides which connects succeed.  Held bytes,
refused backends, fail-over of the next connection, max connections, the
counters' log lines; and the C{[[proxies]]} table and C{srp proxy} options.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from srp.cli import ProxyOptions
from srp.client.proxy import STATS_INTERVAL, ProxyService, proxyFactory
from srp.client.resolver import Candidate, Resolution
from srp.interfaces import IInstanceResolver
from srp.records import InstanceInfo, ProxyRoute, proxyRoute
from srp.server.config import ConfigError, parseConfig
from srp.tap import Options as TwistdOptions
from srp.transports.splice import SplicedClient, SpliceFactory
from srp.wire import WireError

CLIENT = IPv4Address("TCP", "127.0.0.1", 50000)
PRIMARY = Candidate("10.0.0.1", InstanceInfo("A", "SALES", tcp=1433))
STANDBY = Candidate("10.0.0.2", InstanceInfo("B", "SALES", tcp=1433), priority=1)


@implementer(IInstanceResolver)
class FakeResolver:
    """Answers from C{candidates}; remembers resolves and purges."""

    def __init__(self, *candidates: Candidate) -> None:
        self.candidates = candidates
        self.cached = False
        self.resolves = 0
        self.purges = 0

    def resolve(self, cluster: str, instance: str,
                addresses: Any = ()) -> Deferred[Resolution]:
        self.resolves += 1
        resolution = Resolution(cluster, instance, self.candidates, True, "10.0.0.9",
                                cached=self.cached)
        self.cached = True
        return succeed(resolution)

    def purge(self, cluster: str, instance: str) -> None:
        self.purges += 1
        self.cached = False


class ProxyFactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver(PRIMARY, STANDBY)
        self.route = proxyRoute("127.0.0.1:1433", "db1/SALES", prefer=("tcp",),
                                maxConnections=2)
        self.factory: SpliceFactory = proxyFactory(self.reactor, self.route, self.resolver)

    def accept(self, turn: bool = True) -> tuple[SplicedClient, StringTransport]:
        """
        Accept a connection; with C{turn}, let the reactor's turn end, when
        its backend connection starts.
        """
        client = self.factory.buildProtocol(CLIENT)
        assert client is not None
        transport = StringTransport(peerAddress=CLIENT)
        client.makeConnection(transport)
        if turn:
            self.reactor.advance(0)
        return client, transport

    def attempt(self) -> tuple[str, Any]:
        """The oldest TCP connect not yet completed: its host and its factory."""
        host, port, factory, _timeout, _bindAddress = self.reactor.tcpClients.pop(0)
        self.assertEqual(port, 1433)
        return host, factory

    def connect(self) -> tuple[str, StringTransport]:
        host, factory = self.attempt()
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 1433))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return host, transport

    def refuse(self) -> str:
        host, factory = self.attempt()
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        return host

    def test_client_first_bytes_are_held_until_the_place_is_connected(self) -> None:
        client, _ = self.accept()
        client.dataReceived(b"\x12\x01PRELOGIN")
        client.dataReceived(b"-more")
        host, backend = self.connect()
        self.assertEqual(host, PRIMARY.host)
        self.assertEqual(backend.value(), b"\x12\x01PRELOGIN-more")
        client.dataReceived(b"LOGIN7")
        self.assertEqual(backend.value(), b"\x12\x01PRELOGIN-moreLOGIN7")
        self.assertEqual((self.factory.stats.spliced, self.factory.stats.bytesUp), (1, 21))

    def test_the_next_connection_after_a_failure_goes_to_the_standby_at_once(self) -> None:
        first, _ = self.accept()
        self.assertEqual(self.connect()[0], PRIMARY.host)
        # The primary's server dies: the open connection is closed...
        assert first.backend is not None
        first.backend.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(first.transport.disconnecting)  # type: ignore[union-attr]
        first.connectionLost(None)
        # ...and the next one, held bytes and all, reaches the standby first:
        # the place whose server closed is tried last, the cluster asked again.
        second, _ = self.accept()
        second.dataReceived(b"PRELOGIN")
        host, backend = self.connect()
        self.assertEqual(host, STANDBY.host)
        self.assertEqual((self.resolver.purges, self.factory.stats.dropped), (1, 1))
        self.assertEqual(backend.value(), b"PRELOGIN")
        # Without waiting for any timer: nothing was scheduled to get here.
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_client_leaving_unanswered_sends_the_next_one_to_the_standby(self) -> None:
        """
        A stopped server: the driver's request goes unanswered and it leaves
        (its timeout); the next connection goes to the standby, not to the
        silent place, without waiting for any verification to time out.
        """
        first, _ = self.accept()
        self.assertEqual(self.connect()[0], PRIMARY.host)
        first.dataReceived(b"SELECT 1")
        first.connectionLost(None)
        second, _ = self.accept()
        second.dataReceived(b"PRELOGIN")
        host, backend = self.connect()
        self.assertEqual(host, STANDBY.host)
        self.assertEqual(backend.value(), b"PRELOGIN")
        self.assertEqual(self.factory.stats.abandoned, 1)

    def test_a_reconnection_in_the_same_turn_as_the_loss_goes_to_the_standby(self) -> None:
        """
        A driver that times out and reconnects at once: its new connection
        may be accepted before its old one is seen lost, in one reactor turn.
        The new connection's backend starts after the turn, so the silent
        place is already suspected.
        """
        first, _ = self.accept()
        self.assertEqual(self.connect()[0], PRIMARY.host)
        first.dataReceived(b"SELECT 1")
        self.accept(turn=False)
        first.connectionLost(None)
        self.assertEqual(self.reactor.tcpClients, [])
        self.reactor.advance(0)
        self.assertEqual(self.connect()[0], STANDBY.host)

    def test_a_client_gone_before_its_turn_ends_starts_no_connection(self) -> None:
        client, _ = self.accept(turn=False)
        client.connectionLost(None)
        self.reactor.advance(0)
        self.assertEqual((self.reactor.tcpClients, self.factory.stats.orphans), ([], 0))

    def test_an_unreachable_instance_closes_the_client_with_one_log_line(self) -> None:
        client, clientTransport = self.accept()
        client.dataReceived(b"PRELOGIN")
        with capturedLogs() as events:
            for _ in range(2):  # the primary, then the standby
                self.refuse()
        self.assertTrue(clientTransport.disconnecting)
        self.assertEqual(self.factory.stats.failed, 1)
        [event] = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual(event["name"], "proxy 127.0.0.1:1433 -> db1/SALES")
        self.assertIn("no place of db1/SALES could be reached", event["error"])

    def test_connections_beyond_the_maximum_are_refused_and_counted(self) -> None:
        self.accept()
        second, _ = self.accept()
        with capturedLogs() as events:
            self.assertIsNone(self.factory.buildProtocol(CLIENT))
            self.assertIsNone(self.factory.buildProtocol(CLIENT))
        self.assertEqual(self.factory.stats.refused, 2)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.warn]), 1)
        second.connectionLost(None)
        self.assertEqual(self.factory.stats.open, 1)
        self.assertIsNotNone(self.factory.buildProtocol(CLIENT))


class ProxyServiceTests(SynchronousTestCase):
    def test_counters_are_logged_as_fields_when_they_change_and_at_stop(self) -> None:
        reactor = MemoryReactorClock()
        route = proxyRoute("127.0.0.1:1433", "db1/SALES")
        service = ProxyService(reactor, route, FakeResolver(PRIMARY))
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
            [(port, factory, _backlog, interface)] = reactor.tcpServers
            self.assertEqual((port, interface), (1433, "127.0.0.1"))
            client = factory.buildProtocol(CLIENT)
            assert client is not None
            client.makeConnection(StringTransport(peerAddress=CLIENT))
            reactor.advance(STATS_INTERVAL)
            reactor.advance(STATS_INTERVAL)  # unchanged: no second line
            service.stopService()
        stats = [e for e in events if "accepted" in e]
        self.assertEqual([(e["accepted"], e["open"], e["failed"]) for e in stats],
                         [(1, 1, 0)])
        self.assertEqual(stats[0]["name"], "proxy 127.0.0.1:1433 -> db1/SALES")


class RouteTests(SynchronousTestCase):
    def test_listen_and_target(self) -> None:
        route = proxyRoute("[::1]:1433", "[fe80::1]/SALES")
        self.assertEqual((route.host, route.port, route.cluster, route.instance),
                         ("::1", 1433, "fe80::1", "SALES"))
        self.assertEqual(route.listen, "[::1]:1433")

    def test_bad_routes_are_one_line(self) -> None:
        for listen, target, message in [
            ("db1:1433", "db1/SALES", "'db1' is not an IP address"),
            ("127.0.0.1", "db1/SALES", "is not ADDRESS:PORT"),
            ("127.0.0.1:0", "db1/SALES", "is not a port number"),
            ("127.0.0.1:1433", "SALES", "is not CLUSTER/INSTANCE"),
            ("127.0.0.1:1433", "db1/", "is not CLUSTER/INSTANCE"),
        ]:
            with self.assertRaises(WireError) as caught:
                proxyRoute(listen, target)
            self.assertIn(message, str(caught.exception))


class ConfigTests(SynchronousTestCase):
    def test_proxies_table(self) -> None:
        config = parseConfig({"proxies": [
            {"listen": "127.0.0.1:1433", "target": "db1/SALES"},
            {"listen": "127.0.0.1:1435", "target": "db1/HR", "prefer": ["tcp"],
             "verify": "tds", "timeout": 1, "max_connections": 10}]})
        self.assertEqual(config.proxies, (
            ProxyRoute("127.0.0.1", 1433, "db1", "SALES"),
            ProxyRoute("127.0.0.1", 1435, "db1", "HR", ("tcp",), "tds", 1.0, 10)))

    def test_bad_proxies_name_the_table_and_the_problem(self) -> None:
        for table, message in [
            ({"listen": "127.0.0.1:1433"}, "#1: every proxy needs a target"),
            ({"listen": "127.0.0.1:1433", "target": "x/Y", "bogus": 1}, "unknown key 'bogus'"),
            ({"listen": "127.0.0.1:1433", "target": "x/Y", "prefer": ["carrier-pigeon"]},
             "prefer must list some of"),
            ({"listen": "127.0.0.1:1433", "target": "x/Y", "max_connections": 0},
             "max connections must be at least 1"),
            ({"listen": "localhost:1433", "target": "x/Y"}, "is not an IP address"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parseConfig({"proxies": [table]}, "node.toml")
            self.assertIn("node.toml [[proxies]] #1", str(caught.exception))
            self.assertIn(message, str(caught.exception))


class OptionsTests(SynchronousTestCase):
    def test_each_listen_pairs_with_the_target_after_it(self) -> None:
        options = ProxyOptions()
        options.parseOptions(["--listen", "127.0.0.1:1433", "db1/SALES", "-m", "5",
                              "--listen", "127.0.0.1:1435", "db1/HR", "--prefer", "tcp,np"])
        self.assertEqual(options["routes"], [
            ProxyRoute("127.0.0.1", 1433, "db1", "SALES", ("tcp", "np"), maxConnections=5),
            ProxyRoute("127.0.0.1", 1435, "db1", "HR", ("tcp", "np"), maxConnections=5)])

    def test_a_listen_without_its_target_is_a_usage_error(self) -> None:
        for argv in (["--listen", "127.0.0.1:1433"], ["db1/SALES"],
                     ["--listen", "127.0.0.1:1433", "a/B", "c/D"]):
            with self.assertRaises(usage.UsageError):
                ProxyOptions().parseOptions(argv)

    def test_twistd_proxy_option(self) -> None:
        options = TwistdOptions()
        options.parseOptions(["--proxy", "127.0.0.1:1433=db1/SALES"])
        self.assertIsNone(options.config)
        self.assertEqual(options.routes(), (ProxyRoute("127.0.0.1", 1433, "db1", "SALES"),))
        with self.assertRaises(usage.UsageError):
            TwistdOptions().parseOptions(["--proxy", "127.0.0.1:1433"])
        with self.assertRaises(usage.UsageError):
            TwistdOptions().parseOptions([])
