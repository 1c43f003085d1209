"""
Moves pushed to clients, on a Clock: the Subscribe/Notify codec, a node's
subscription table, the client's subscription and the srp: endpoint's
reaction, and FailoverClient's idle and busy moves.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from srp.authenticator import ClusterAuthenticator
from srp.client.endpoint import SRPClientEndpoint, SRPClientParser
from srp.client.etcdwatch import EtcdPlaces, WatchEtcd
from srp.client.failover import DEFAULT_MOVE_GRACE, FailoverClient
from srp.client.resolver import Candidate, Resolution
from srp.client.subscription import FIRST_RETRY, NodeSubscription, SubscribeTo
from srp.etcd.client import Event, KeyValue
from srp.etcd.keys import ClusterKeys
from srp.interfaces import IIdleAware, IInstanceResolver, IMoveListener, IMovingEndpoint
from srp.records import InstanceInfo, Registration
from srp.server.subscriptions import RESEND_DELAYS, Subscriptions
from srp.testing import FakeDatagramTransport, FakeHostReactor, FakeNetwork, connectDatagram
from srp.wire.cluster import Envelope, ResolveReply, clusterId, decodeEnvelope
from srp.wire.fields import encodeRegistration
from srp.wire.subscriptions import Notify, NotifyAck, Subscribe
from tests.test_failover import A, Application, B, SuspectingEndpoint

KEY = b"k" * 32
PRIMARY = Registration(InstanceInfo("h1", "SALES", tcp=1433), priority=0, nodeId=1)
STANDBY = Registration(InstanceInfo("h2", "SALES", tcp=1434), priority=1, nodeId=2)
CLIENT = ("192.0.2.7", 50000)


def test_subscription_messages_round_trip() -> None:
    for message in (Subscribe("SALES", 30000), NotifyAck("SALES", 7),
                    Notify("SALES", 7, 20000, (PRIMARY, STANDBY), ("", "10.0.0.2"))):
        datagram = Envelope(message, clusterId("c"), 1, 0, 1).encode(KEY)
        assert datagram[0] == 0xAF
        assert decodeEnvelope(datagram, KEY, clusterId("c")).message == message


def test_a_subscribe_for_any_cluster_is_taken() -> None:
    datagram = Envelope(Subscribe("SALES", 1), 0, 1, 0, 1).encode(KEY)
    assert decodeEnvelope(datagram, KEY, clusterId("c")).message == Subscribe("SALES", 1)


class Table:
    """A node's subscription table whose answers the test sets, and what it sent."""

    def __init__(self, limit: int = 10) -> None:
        self.clock = Clock()
        self.answers: dict[str, tuple[Registration, ...]] = {"SALES": (PRIMARY, STANDBY)}
        self.sent: list[tuple[Any, tuple[str, int]]] = []
        self.counters: Counter[str] = Counter()
        self.socket = DatagramProtocol()
        self.table = Subscriptions(self.clock, self.answer, self.send, self.counters,
                                   lambda: limit)

    def answer(self, name: str) -> ResolveReply:
        registrations = self.answers.get(name.upper(), ())
        return ResolveReply(name, registrations, tuple("" for _ in registrations))

    def send(self, message: Any, to: tuple[str, int], sender: DatagramProtocol) -> None:
        assert sender is self.socket
        self.sent.append((message, to))

    def subscribe(self, source: tuple[str, int] = CLIENT, ttl: int = 10_000) -> Notify:
        before = len(self.sent)
        self.table.received(Subscribe("sales", ttl), source, self.socket)
        [(notify, to)] = self.sent[before:]
        assert to == source and isinstance(notify, Notify)
        return notify

    def notifies(self) -> list[tuple[Notify, tuple[str, int]]]:
        sent, self.sent = self.sent, []
        return sent


class SubscriptionTableTests(SynchronousTestCase):
    """L{Subscriptions}: subscribe, push, repeat until acked, lapse, bound, end."""

    def test_subscribe_answers_the_current_answer(self) -> None:
        table = Table()
        notify = table.subscribe()
        self.assertEqual((notify.registrations, notify.ttl), ((PRIMARY, STANDBY), 10_000))
        self.assertEqual(table.counters["subscriptions"], 1)

    def test_a_notify_is_repeated_until_acknowledged(self) -> None:
        table = Table()
        notify = table.subscribe()
        table.notifies()
        table.clock.advance(RESEND_DELAYS[0])
        self.assertEqual(table.notifies(), [(notify, CLIENT)])
        table.table.received(NotifyAck("SALES", notify.change), CLIENT, table.socket)
        table.clock.advance(sum(RESEND_DELAYS))
        self.assertEqual(table.notifies(), [])

    def test_repetition_is_bounded(self) -> None:
        table = Table()
        table.subscribe()
        for delay in (*RESEND_DELAYS, 1.0):
            table.clock.advance(delay)
        self.assertEqual(len(table.notifies()), 1 + len(RESEND_DELAYS))
        self.assertEqual(table.counters["notifies_unacked"], 1)
        self.assertEqual(table.clock.getDelayedCalls(), [])

    def test_changes_of_one_turn_are_pushed_once(self) -> None:
        table = Table()
        first = table.subscribe()
        table.table.received(NotifyAck("SALES", first.change), CLIENT, table.socket)
        table.notifies()
        table.answers["SALES"] = ()
        table.table.changed()
        table.answers["SALES"] = (STANDBY,)
        table.table.changed()
        table.clock.advance(0)
        [(notify, to)] = table.notifies()
        self.assertEqual((notify.registrations, to), ((STANDBY,), CLIENT))
        self.assertGreater(notify.change, first.change)
        self.assertEqual(notify.ttl, 10_000)
        self.assertEqual(table.counters["notifies"], 1)

    def test_an_unchanged_answer_is_not_pushed(self) -> None:
        table = Table()
        notify = table.subscribe()
        table.table.received(NotifyAck("SALES", notify.change), CLIENT, table.socket)
        table.notifies()
        table.table.changed()
        table.clock.advance(0)
        self.assertEqual(table.notifies(), [])

    def test_a_lapsed_subscription_is_not_pushed(self) -> None:
        table = Table()
        notify = table.subscribe(ttl=1000)
        table.table.received(NotifyAck("SALES", notify.change), CLIENT, table.socket)
        table.clock.advance(1.0)
        table.notifies()
        table.answers["SALES"] = (STANDBY,)
        table.table.changed()
        table.clock.advance(0)
        self.assertEqual(table.notifies(), [])
        self.assertEqual((len(table.table), table.counters["subscriptions_lapsed"]), (0, 1))

    def test_a_renewal_extends_the_lifetime(self) -> None:
        table = Table()
        table.subscribe(ttl=1000)
        table.clock.advance(0.9)
        table.subscribe(ttl=1000)
        table.clock.advance(0.9)
        table.table.sweep()
        self.assertEqual(len(table.table), 1)
        self.assertEqual(table.counters["subscription_renewals"], 1)

    def test_the_count_is_bounded(self) -> None:
        table = Table(limit=1)
        table.subscribe(("192.0.2.7", 1))
        refused = table.subscribe(("192.0.2.7", 2))
        self.assertEqual((refused.ttl, refused.registrations), (0, ()))
        self.assertEqual((len(table.table), table.counters["subscriptions_refused"]), (1, 1))
        table.notifies()
        for delay in RESEND_DELAYS:  # a refusal is not repeated
            table.clock.advance(delay)
        self.assertNotIn(("192.0.2.7", 2), [to for _, to in table.notifies()])

    def test_unsubscribe(self) -> None:
        table = Table()
        table.subscribe()
        table.table.received(Subscribe("SALES", 0), CLIENT, table.socket)
        self.assertEqual((len(table.table), table.counters["unsubscribes"]), (0, 1))
        self.assertEqual(table.clock.getDelayedCalls(), [])

    def test_end_leaves_out_the_leaving_node(self) -> None:
        table = Table()
        table.subscribe()
        table.notifies()
        table.table.end(leaving=PRIMARY.nodeId)
        [(notify, to)] = table.notifies()
        self.assertEqual((notify.registrations, notify.ttl, to), ((STANDBY,), 0, CLIENT))
        table.table.close()
        self.assertEqual(table.clock.getDelayedCalls(), [])


@implementer(IInstanceResolver)
class FixedResolver:
    """Resolves SALES to the primary at 10.0.0.1, as node 10.0.0.9 answered."""

    def __init__(self) -> None:
        self.purged = 0

    def resolve(self, cluster: str, instance: str, addresses: Any = ()) -> Deferred[Any]:
        return succeed(Resolution(cluster, instance,
                                  (Candidate("10.0.0.1", PRIMARY.info, 0, 1),
                                   Candidate("10.0.0.2", STANDBY.info, 1, 2)),
                                  True, "10.0.0.9"))

    def purge(self, cluster: str, instance: str) -> None:
        self.purged += 1


@implementer(IMoveListener)
class Listener:
    def __init__(self) -> None:
        self.moves = 0

    def instanceMoved(self) -> None:
        self.moves += 1


class NodeAnswers:
    """What a node sends a subscriber: Notifies sealed with the cluster key."""

    def __init__(self, clock: Clock) -> None:
        self.auth = ClusterAuthenticator(clock, clusterId(None), 99, KEY)

    def notify(self, change: int, *registrations: Registration, ttl: int = 30_000) -> bytes:
        hosts = tuple({1: "10.0.0.1", 2: "10.0.0.2"}[r.nodeId] for r in registrations)
        return self.auth.seal(Notify("SALES", change, ttl, registrations, hosts), 0)


def opened(clock: Clock, transport: FakeDatagramTransport) -> list[Any]:
    auth = ClusterAuthenticator(clock, clusterId(None), 98, KEY)
    return [auth.open(datagram, "127.0.0.1").message for datagram, _ in transport.written]


class NodeSubscriptionTests(SynchronousTestCase):
    """L{NodeSubscription}: subscribes until answered, renews, acks, hands on new answers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.heard: list[tuple[tuple[Candidate, ...], str]] = []
        self.subscription = NodeSubscription(self.clock, SubscribeTo(key=KEY, ttl=3.0), "SALES",
                                             lambda c, s: self.heard.append((c, s)))
        self.transport = connectDatagram(self.subscription)
        self.subscription.retarget(["10.0.0.9"])
        self.node = NodeAnswers(self.clock)

    def test_subscribe_is_repeated_until_answered_then_renewed(self) -> None:
        self.clock.advance(FIRST_RETRY)
        self.assertEqual(opened(self.clock, self.transport),
                         [Subscribe("SALES", 3000), Subscribe("SALES", 3000)])
        self.subscription.datagramReceived(self.node.notify(1, PRIMARY), ("10.0.0.9", 1434))
        self.assertEqual(opened(self.clock, self.transport)[-1], NotifyAck("SALES", 1))
        self.clock.advance(0.999)
        self.assertEqual(len(self.transport.written), 3)
        self.clock.advance(0.001)
        self.assertEqual(opened(self.clock, self.transport)[-1], Subscribe("SALES", 3000))

    def test_new_answers_are_handed_on_once(self) -> None:
        self.subscription.datagramReceived(self.node.notify(1, PRIMARY, STANDBY),
                                           ("10.0.0.9", 1434))
        self.subscription.datagramReceived(self.node.notify(1, PRIMARY, STANDBY),
                                           ("10.0.0.9", 1434))
        self.subscription.datagramReceived(self.node.notify(2, STANDBY), ("10.0.0.9", 1434))
        self.assertEqual([[c.host for c in candidates] for candidates, _ in self.heard],
                         [["10.0.0.1", "10.0.0.2"], ["10.0.0.2"]])
        acks = [m for m in opened(self.clock, self.transport) if isinstance(m, NotifyAck)]
        self.assertEqual([a.change for a in acks], [1, 1, 2])

    def test_an_ended_subscription_is_sought_again(self) -> None:
        self.subscription.datagramReceived(self.node.notify(1, PRIMARY), ("10.0.0.9", 1434))
        self.subscription.datagramReceived(self.node.notify(2, STANDBY, ttl=0),
                                           ("10.0.0.9", 1434))
        self.assertEqual(self.heard[-1][0][0].host, "10.0.0.2")
        before = len(self.transport.written)
        self.clock.advance(FIRST_RETRY)
        self.assertEqual(opened(self.clock, self.transport)[before:], [Subscribe("SALES", 3000)])

    def test_other_sources_are_ignored(self) -> None:
        self.subscription.datagramReceived(self.node.notify(1, STANDBY), ("10.0.0.66", 1434))
        self.assertEqual(self.heard, [])

    def test_stop_unsubscribes(self) -> None:
        self.subscription.stop()
        self.assertEqual(opened(self.clock, self.transport)[-1], Subscribe("SALES", 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class EndpointMoveTests(SynchronousTestCase):
    """The srp: endpoint answers from pushed places and tells its listeners of moves."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = SRPClientEndpoint(self.clock, "db1", "SALES", FixedResolver(),
                                          subscribe=SubscribeTo(key=KEY))
        self.endpoint._source = "10.0.0.9"
        self.listener = Listener()

    def test_it_is_a_moving_endpoint(self) -> None:
        verifyObject(IMovingEndpoint, self.endpoint)
        verifyObject(IMoveListener, self.listener)

    def test_a_listener_starts_and_ends_the_subscription(self) -> None:
        network = FakeNetwork(self.clock)
        self.endpoint.reactor = FakeHostReactor(network, "10.0.0.5")
        self.endpoint.addMoveListener(self.listener)
        subscription = self.endpoint.subscription
        assert isinstance(subscription, NodeSubscription)
        self.assertEqual((subscription.instance, subscription.hosts), ("SALES", ("10.0.0.9",)))
        self.endpoint.removeMoveListener(self.listener)
        self.assertIsNone(self.endpoint.subscription)
        self.clock.advance(1)  # the datagrams in flight arrive; no renewal is due
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_move_away_from_the_connected_place_is_told(self) -> None:
        self.endpoint._listeners.append(self.listener)
        self.endpoint.connectedTo = ("tcp", Candidate("10.0.0.1", PRIMARY.info, 0, 1))
        standby = Candidate("10.0.0.2", STANDBY.info, 1, 2)
        self.endpoint._notified((Candidate("10.0.0.1", PRIMARY.info, 0, 1), standby),
                                "10.0.0.9")
        self.assertEqual(self.listener.moves, 0)
        self.endpoint._notified((standby,), "10.0.0.9")
        self.assertEqual(self.listener.moves, 1)
        # The next connection goes to the pushed places.
        resolution = self.successResultOf(Deferred.fromCoroutine(self.endpoint._resolve()))
        self.assertEqual([c.host for c in resolution.candidates], ["10.0.0.2"])

    def test_a_move_to_a_down_place_is_not_told(self) -> None:
        self.endpoint._listeners.append(self.listener)
        self.endpoint.connectedTo = ("tcp", Candidate("10.0.0.1", PRIMARY.info, 0, 1))
        self.endpoint._notified((Candidate("10.0.0.2", STANDBY.info, 1, 2, down=True),),
                                "10.0.0.9")
        self.assertEqual(self.listener.moves, 0)


@implementer(IMovingEndpoint)
class MovingEndpoint(SuspectingEndpoint):
    """A fake endpoint that also tells its listeners of moves."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[IMoveListener] = []

    def addMoveListener(self, listener: IMoveListener) -> None:
        self.listeners.append(listener)

    def removeMoveListener(self, listener: IMoveListener) -> None:
        self.listeners.remove(listener)

    def move(self) -> None:
        for listener in list(self.listeners):
            listener.instanceMoved()


@implementer(IIdleAware)
class Requests(Application):
    """An application that writes one-byte requests and knows which are unanswered."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited: list[bytes] = []

    def ask(self, request: bytes) -> None:
        self.awaited.append(request)
        assert self.transport is not None
        self.transport.write(request)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        for answer in data:
            self.awaited.remove(bytes([answer]))

    def idle(self) -> bool:
        return not self.awaited


class FailoverMoveTests(SynchronousTestCase):
    """FailoverClient moves an idle connection before it is needed, a busy one at once."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = MovingEndpoint()
        self.app = Application()
        self.client = FailoverClient(self.clock, self.endpoint, self.app)
        self.client.connect()
        self.first = self.endpoint.pending.succeed(A)
        self.addCleanup(self.stop)

    def stop(self) -> None:
        self.client.close()
        self.assertEqual(self.endpoint.listeners, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def write(self, data: bytes) -> None:
        assert self.app.transport is not None
        self.app.transport.write(data)

    def test_an_idle_connection_is_connected_to_the_new_place_first(self) -> None:
        self.endpoint.move()
        # The old connection stays until the new one is up.
        self.assertTrue(self.first.connected)
        second = self.endpoint.pending.succeed(B)
        self.assertFalse(self.first.connected)
        self.write(b"ping")  # written during the swap: kept for the new place
        self.clock.advance(0)
        self.assertEqual(second.value(), b"ping")
        self.assertEqual(self.first.value(), b"")
        self.assertEqual(len(self.endpoint.attempts), 2, "no other connection made")
        self.assertEqual((self.app.moves, self.app.lost, self.app.made), ([(A, B)], [], 1))
        self.assertEqual((self.client.moves, self.endpoint.suspected), (1, []))
        second.protocol.dataReceived(b"pong")
        self.assertEqual(self.app.received, [b"pong"])

    def test_a_write_during_the_swap_goes_to_the_new_place_at_once(self) -> None:
        self.endpoint.move()
        second = self.endpoint.pending.succeed(B)
        self.write(b"ping")
        self.assertEqual(second.value(), b"ping", "not held for the adoption")
        self.clock.advance(0)
        self.assertEqual(second.value(), b"ping", "and not written twice")
        self.assertEqual(self.client.waitedWrites, 0)

    def test_a_write_to_a_new_connection_lost_before_its_adoption_is_kept(self) -> None:
        self.endpoint.move()
        second = self.endpoint.pending.succeed(B)
        self.write(b"ping")
        second.protocol.connectionLost(Failure(ConnectionLost()))
        self.clock.advance(0)
        third = self.endpoint.pending.succeed(B)
        self.assertEqual(third.value(), b"ping")
        self.assertEqual(self.client.waitedWrites, 1, "it waited for the third connection")

    def test_a_connection_busy_at_the_swap_moves_after_its_answer(self) -> None:
        self.endpoint.move()
        self.write(b"ping")
        second = self.endpoint.pending.succeed(B)
        self.assertTrue(self.first.connected)
        self.first.protocol.dataReceived(b"pong")
        self.assertFalse(self.first.connected)
        self.assertEqual((self.app.received, self.first.value()), ([b"pong"], b"ping"))
        self.clock.advance(0)
        self.write(b"next")
        self.assertEqual(second.value(), b"next")
        self.assertEqual(self.app.moves, [(A, B)])

    def test_an_application_that_awaits_an_answer_keeps_its_connection(self) -> None:
        """
        Two requests out as the new place's connection comes up, the first
        answered: the bytes look idle, the application says otherwise, and
        the swap waits for the second answer.
        """
        endpoint, app = MovingEndpoint(), Requests()
        client = FailoverClient(self.clock, endpoint, app)
        client.connect()
        first = endpoint.pending.succeed(A)
        endpoint.move()  # idle: the move connects to the new place first
        app.ask(b"1")
        app.ask(b"2")
        second = endpoint.pending.succeed(B)
        first.protocol.dataReceived(b"1")
        self.assertTrue(first.connected, "the answer to 2 is still on its way")
        first.protocol.dataReceived(b"2")
        self.assertFalse(first.connected)
        self.clock.advance(0)
        app.ask(b"3")
        self.assertEqual((first.value(), second.value()), (b"12", b"3"))
        self.assertEqual((client.moves, app.moves), (1, [(A, B)]))
        client.close()

    def test_a_busy_connection_moves_once_answered(self) -> None:
        """Busy when the move is pushed: no request is lost to the move."""
        self.write(b"ping")
        self.endpoint.move()
        second = self.endpoint.pending.succeed(B)
        self.assertTrue(self.first.connected)
        self.first.protocol.dataReceived(b"pong")
        self.assertFalse(self.first.connected)
        self.write(b"next")
        self.assertEqual((self.first.value(), second.value()), (b"ping", b"next"))
        self.clock.advance(0)
        second.protocol.dataReceived(b"ok")
        self.assertEqual(self.app.received, [b"pong", b"ok"])
        self.assertEqual((self.app.moves, self.client.moves, self.endpoint.suspected),
                         ([(A, B)], 1, []))

    def test_a_connection_still_busy_after_the_grace_is_dropped_for_the_new_place(self) -> None:
        """A stopped server: the move does not wait for the answer timeout."""
        self.write(b"ping")
        self.endpoint.move()
        second = self.endpoint.pending.succeed(B)
        self.clock.advance(DEFAULT_MOVE_GRACE - 0.001)
        self.assertTrue(self.first.connected)
        self.clock.advance(0.001)
        self.assertFalse(self.first.connected)
        self.clock.advance(0)
        self.write(b"again")
        self.assertEqual(second.value(), b"again")
        second.protocol.dataReceived(b"ok")
        self.assertEqual((self.app.moves, self.client.moves, self.endpoint.suspected),
                         ([(A, B)], 1, []))

    def test_an_unreachable_new_place_keeps_the_connection(self) -> None:
        self.endpoint.move()
        self.endpoint.pending.fail()
        self.assertTrue(self.first.connected)
        self.write(b"ping")
        self.assertEqual(self.first.value(), b"ping")
        self.assertEqual((self.app.moves, self.client.moves), ([], 0))


    def test_a_failure_during_the_move_is_a_fail_over(self) -> None:
        """The old place fails while the new one is being connected: one connection stays."""
        self.endpoint.move()
        spare = self.endpoint.pending
        self.first.loseConnection()
        self.clock.advance(0)
        reconnected = self.endpoint.pending.succeed(B)
        late = spare.succeed(B)
        self.assertFalse(late.connected, "the move's connection is closed")
        self.assertTrue(reconnected.connected)
        self.write(b"ping")
        self.assertEqual(reconnected.value(), b"ping")
        self.assertEqual((self.app.moves, self.client.moves), ([(A, B)], 0))
        self.assertEqual(self.endpoint.suspected, [A])


class EtcdPlacesTests(SynchronousTestCase):
    """L{EtcdPlaces}: the places of an instance as the cluster's etcd keys say."""

    def setUp(self) -> None:
        self.keys = ClusterKeys("c")
        self.heard: list[list[tuple[str, int | None]]] = []
        self.places = EtcdPlaces(Clock(), WatchEtcd(("http://127.0.0.1:1",), "c"), "sales",
                                 lambda c, s: self.heard.append(
                                     [(x.host, x.info.tcp) for x in c]))

    def node(self, node: int, address: str) -> KeyValue:
        return KeyValue(self.keys.node(node), json.dumps({"addresses": [address]}).encode())

    def registration(self, registration: Registration, revision: int) -> KeyValue:
        return KeyValue(self.keys.registration(registration.nodeId, registration.key),
                        encodeRegistration(registration), createRevision=revision)

    def test_snapshot_and_changes(self) -> None:
        other = Registration(InstanceInfo("h", "OTHER", tcp=9), nodeId=1)
        self.places._snapshot([self.node(1, "10.0.0.1"), self.node(2, "10.0.0.2"),
                               self.registration(STANDBY, 5), self.registration(PRIMARY, 6),
                               self.registration(other, 7)])
        self.assertEqual(self.heard, [[("10.0.0.1", 1433), ("10.0.0.2", 1434)]])
        # The primary's node goes: its keys are deleted with its lease.
        self.places._events([Event(KeyValue(self.keys.registration(1, "SALES")), True),
                             Event(KeyValue(self.keys.node(1)), True)])
        self.assertEqual(self.heard[-1], [("10.0.0.2", 1434)])
        # An unrelated change tells nothing.
        self.places._events([Event(self.registration(other, 9))])
        self.assertEqual(len(self.heard), 2)

    def test_a_registration_waits_for_its_node_address(self) -> None:
        self.places._snapshot([self.registration(PRIMARY, 5)])
        self.assertEqual(self.heard, [])
        self.places._events([Event(self.node(1, "10.0.0.1"))])
        self.assertEqual(self.heard, [[("10.0.0.1", 1433)]])

    def test_a_refusal_is_one_line_until_watched(self) -> None:
        """
        etcd refusing the watch (or out of reach) is one warning with the
        reason, however often the watch is tried again; a line once it runs.
        """
        refused = "no etcd endpoint answered (e: TLS failed: certificate verify failed)"
        with capturedLogs() as events:
            for _ in range(3):
                self.places.mirror.onError(refused)
            self.assertEqual(self.places.error, refused)
            self.places.mirror.onState(True)
            self.assertIsNone(self.places.error)
            self.places.mirror.onError("no etcd endpoint answered (e: ConnectionRefusedError)")
        self.assertEqual([(e["log_level"], formatEvent(e)) for e in events], [
            (LogLevel.warn, f"Cannot watch etcd for the moves of sales, trying again: {refused}"),
            (LogLevel.info, "Watching etcd for the moves of sales"),
            (LogLevel.warn, "Cannot watch etcd for the moves of sales, trying again: "
                            "no etcd endpoint answered (e: ConnectionRefusedError)")])


class ParserTests(SynchronousTestCase):
    """The srp: endpoint's subscribe= and etcd= options."""

    def parse(self, **options: str) -> SRPClientEndpoint:
        endpoint = SRPClientParser().parseStreamClient(Clock(), "db1/SALES", **options)
        assert isinstance(endpoint, SRPClientEndpoint)
        return endpoint

    def test_off_by_default(self) -> None:
        endpoint = self.parse()
        self.assertEqual((endpoint.subscribeTo, endpoint.watchEtcd), (None, None))

    def test_subscribe(self) -> None:
        self.assertEqual(self.parse(subscribe="yes", cluster="c", port="1500").subscribeTo,
                         SubscribeTo(1500, "c"))
        with self.assertRaisesRegex(ValueError, "subscribe is yes or no, not 'maybe'"):
            self.parse(subscribe="maybe")

    def test_etcd(self) -> None:
        self.assertEqual(self.parse(etcd="http://127.0.0.1:2379,http://h:2379").watchEtcd,
                         WatchEtcd(("http://127.0.0.1:2379", "http://h:2379"), "db1"))
        with self.assertRaisesRegex(ValueError, "etcd is a list of http:// or https:// URLs"):
            self.parse(etcd="127.0.0.1:2379")
        with self.assertRaisesRegex(ValueError, "subscribe=yes or etcd=, not both"):
            self.parse(etcd="http://h:2379", subscribe="yes")
