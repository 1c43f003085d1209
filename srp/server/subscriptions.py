"""
Moves pushed to clients: the subscriptions a node keeps, and the Notify
each one is sent when its instance's answer changes.

A client subscribes to an instance for a lifetime it renews (a dead
client's subscription lapses); the node answers with the current answer at
once, and after every change of it (a registration moved, went down or up,
the active changed) sends the new answer to each subscriber, repeating it
until the subscriber acknowledges it (UDP loses datagrams).  The changes of
one reactor turn are pushed together at its end, so that a Join replacing a
node's registrations one by one pushes its outcome, not its steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import define, evolve, field
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.records import instanceKey
from srp.server.limits import StateBounds, tallied
from srp.wire.cluster import ClusterMessage, ResolveReply
from srp.wire.subscriptions import Notify, NotifyAck, Subscribe

Address = tuple[str, int]

#: Subscriptions a node keeps at once by default; more are refused (counted and logged).
DEFAULT_MAX_SUBSCRIPTIONS = StateBounds().maxSubscriptions
#: The longest lifetime granted, in milliseconds: a client renews before it ends.
MAX_TTL = 60_000
#: Seconds before each repetition of an unacknowledged Notify.
RESEND_DELAYS = (0.05, 0.1, 0.2, 0.4)


@define
class _Subscriber:
    """One client's subscription to one instance, and its unacknowledged Notify."""

    address: Address
    replyFrom: DatagramProtocol
    expires: float
    pending: Notify | None = None
    resends: int = 0
    timer: IDelayedCall | None = None

    def cancel(self) -> None:
        """Stop repeating the pending Notify."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.pending = None


@define
class _Instance:
    """An instance's subscribers, and the answer they were last told (numbered C{change})."""

    name: str
    subscribers: dict[Address, _Subscriber] = field(factory=dict)
    answer: ResolveReply | None = None
    change: int = 0


class Subscriptions:
    """
    The subscriptions of one node, by instance.

    @param answer: the answer a subscriber of an instance is told (what an
        extended resolve of it answers), or L{None} while the node answers
        for no one.
    @param send: seals a message and sends it to an address out of a socket.
    @param limit: the most subscriptions held at once (read at each new one:
        a reload may change it).
    """

    log = Logger()

    def __init__(self, reactor: Any, answer: Callable[[str], ResolveReply | None],
                 send: Callable[[ClusterMessage, Address, DatagramProtocol], None],
                 counters: Counter[str],
                 limit: Callable[[], int] = lambda: DEFAULT_MAX_SUBSCRIPTIONS) -> None:
        self.reactor = reactor
        self.answer = answer
        self.send = send
        self.counters = counters
        self.limit = limit
        #: The subscribed instances, by instance key.
        self.instances: dict[str, _Instance] = {}
        #: The number of the last change of any answer.
        self.change = 0
        self._pending: IDelayedCall | None = None

    def __len__(self) -> int:
        """How many subscriptions are held (lapsed ones too, until they are swept)."""
        return sum(len(instance.subscribers) for instance in self.instances.values())

    def received(self, message: Subscribe | NotifyAck, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """A subscriber's Subscribe (a new one, a renewal or an end) or NotifyAck."""
        key = instanceKey(message.instanceName)
        instance = self.instances.get(key)
        subscriber = None if instance is None else instance.subscribers.get(source)
        if isinstance(message, NotifyAck):
            if subscriber is not None and subscriber.pending is not None and (
                    subscriber.pending.change == message.change):
                subscriber.cancel()
            return
        if not message.ttl:
            if instance is not None and subscriber is not None:
                self._drop(key, instance, source)
                self.counters["unsubscribes"] += 1
            return
        now = self.reactor.seconds()
        if subscriber is None:
            self.sweep()
            if len(self) >= self.limit():
                self._refuse(message, source, replyFrom)
                return
            instance = self.instances.setdefault(key, _Instance(message.instanceName))
            subscriber = instance.subscribers[source] = _Subscriber(source, replyFrom, now)
            self.counters["subscriptions"] += 1
        else:
            self.counters["subscription_renewals"] += 1
        assert instance is not None
        ttl = min(message.ttl, MAX_TTL)
        subscriber.expires = now + ttl / 1000
        subscriber.replyFrom = replyFrom
        # The answer as it is now, repeated until acknowledged: the
        # subscriber's starting point, or its check after a lost Notify.
        self._deliver(subscriber, self._current(instance, ttl))

    def _refuse(self, message: Subscribe, source: Address, replyFrom: DatagramProtocol) -> None:
        if tallied(self.counters, "subscriptions_refused"):
            self.log.warn("Refused a subscription to {instance} from {host}: the node holds "
                          "{limit} subscriptions (refused {count} times)",
                          instance=message.instanceName, host=source[0], limit=self.limit(),
                          count=self.counters["subscriptions_refused"])
        self.send(Notify(message.instanceName, self.change, 0, (), ()), source, replyFrom)

    def _current(self, instance: _Instance, ttl: int) -> Notify:
        """The Notify of C{instance}'s answer as it is now, numbered by its last change."""
        reply = self.answer(instance.name)
        if not instance.change or reply != instance.answer:
            self.change += 1
            instance.answer, instance.change = reply, self.change
        if reply is None:
            return Notify(instance.name, instance.change, ttl, (), ())
        return Notify(instance.name, instance.change, ttl, reply.registrations, reply.hosts)

    def changed(self) -> None:
        """The answers may have changed: push the changes at the end of this reactor turn."""
        if self._pending is None and self.instances:
            self._pending = self.reactor.callLater(0, self.push)

    def push(self) -> None:
        """Send the subscribers of each instance whose answer changed the new answer."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self.sweep()
        now = self.reactor.seconds()
        for instance in self.instances.values():
            before = instance.change
            notify = self._current(instance, 0)
            if notify.change == before or instance.answer is None:
                # Unchanged, or this node answers for no one now (a
                # subscriber hears of the next active when it renews).
                continue
            self.counters["notifies"] += 1
            for subscriber in instance.subscribers.values():
                left = int((subscriber.expires - now) * 1000)
                self._deliver(subscriber, evolve(notify, ttl=max(left, 1)))

    def end(self, leaving: int) -> None:
        """
        This node stops answering (it hands over, or stops): tell each
        subscriber the answer without node C{leaving}'s registrations, and
        that its subscription ended (subscribe again: the next node answers).
        """
        for instance in self.instances.values():
            reply = self.answer(instance.name) or instance.answer
            kept = () if reply is None else tuple(
                (r, h) for r, h in zip(reply.registrations, reply.hosts, strict=True)
                if r.nodeId != leaving)
            self.change += 1
            notify = Notify(instance.name, self.change, 0, tuple(r for r, _ in kept),
                            tuple(h for _, h in kept))
            for subscriber in instance.subscribers.values():
                self._deliver(subscriber, notify)
            self.counters["subscriptions_ended"] += len(instance.subscribers)

    def close(self) -> None:
        """Forget every subscription and stop repeating."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        for instance in self.instances.values():
            for subscriber in instance.subscribers.values():
                subscriber.cancel()
        self.instances = {}

    def sweep(self) -> None:
        """Forget the subscriptions whose lifetime ran out."""
        now = self.reactor.seconds()
        for key, instance in list(self.instances.items()):
            for address, subscriber in list(instance.subscribers.items()):
                if subscriber.expires <= now:
                    self.counters["subscriptions_lapsed"] += 1
                    self._drop(key, instance, address)

    def _drop(self, key: str, instance: _Instance, address: Address) -> None:
        instance.subscribers.pop(address).cancel()
        if not instance.subscribers:
            del self.instances[key]

    def _deliver(self, subscriber: _Subscriber, notify: Notify) -> None:
        subscriber.cancel()
        subscriber.pending = notify
        subscriber.resends = 0
        self._sendPending(subscriber)

    def _sendPending(self, subscriber: _Subscriber) -> None:
        notify = subscriber.pending
        if notify is None:
            return
        self.send(notify, subscriber.address, subscriber.replyFrom)
        if subscriber.resends < len(RESEND_DELAYS):
            subscriber.timer = self.reactor.callLater(RESEND_DELAYS[subscriber.resends],
                                                      self._sendPending, subscriber)
            subscriber.resends += 1
        else:
            self.counters["notifies_unacked"] += 1
            subscriber.timer = None
            subscriber.pending = None
