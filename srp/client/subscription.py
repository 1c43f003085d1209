"""
A client's subscription to an instance's answer at an srp cluster: the
node that answers pushes each change of it (a registration moved, went
down or up, the active changed) as it happens.

L{NodeSubscription} sends a Subscribe to every address of the cluster (as a
resolve asks them all: the active answers), repeats it until a node answers
with a Notify (the answer as it is now), renews it before its lifetime
ends, acknowledges every Notify, and hands each new answer to its owner
(the C{srp:} endpoint).  A Notify that says the subscription ended (its
node stops, or is full) is acted on and the subscription sought again,
soon: after a takeover the renewal reaches the new active.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import field, frozen
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.client.resolver import Candidate, candidatesOf
from srp.records import instanceKey
from srp.wire.cluster import clusterId
from srp.wire.errors import WireError
from srp.wire.mcsqlr import BROWSER_PORT, MAX_DATAGRAM
from srp.wire.subscriptions import Notify, NotifyAck, Subscribe

#: Seconds before the first repeat of an unanswered Subscribe; each repeat
#: waits twice as long, up to a third of the lifetime.
FIRST_RETRY = 0.1


@frozen
class SubscribeTo:
    """
    How an endpoint subscribes: the cluster's UDP port, its name (none:
    whichever cluster the node is in), its key, and the lifetime asked for
    (seconds; renewed at a third of it).
    """

    port: int = BROWSER_PORT
    clusterName: str | None = None
    key: bytes = field(default=b"", repr=False)
    ttl: float = 30.0


#: What a subscription hands its owner: the candidates, and the address that sent them.
Notified = Callable[[tuple[Candidate, ...], str], None]


class NodeSubscription(DatagramProtocol):
    """
    A subscription to C{instance} at the nodes of a cluster (L{retarget}
    changes their addresses), kept up until L{stop}.

    @param notified: called with each new answer's candidates (best first)
        and the address of the node that sent it.
    """

    noisy = False
    log = Logger()

    def __init__(self, reactor: Any, settings: SubscribeTo, instance: str,
                 notified: Notified) -> None:
        self.reactor = reactor
        self.settings = settings
        self.instance = instance
        self.notified = notified
        self.auth = ClusterAuthenticator(reactor, clusterId(settings.clusterName),
                                         randomNodeId(), settings.key)
        self.hosts: tuple[str, ...] = ()
        #: Whether the node confirmed the subscription since the last Subscribe.
        self.confirmed = False
        #: The last answer taken: (sending node, change number).
        self.last: tuple[int, int] | None = None
        self._retry = FIRST_RETRY
        self._timer: IDelayedCall | None = None

    def start(self, hosts: Sequence[str]) -> None:
        """Subscribe at the cluster addresses C{hosts}."""
        self.reactor.listenUDP(0, self, interface="::" if any(":" in h for h in hosts) else "",
                               maxPacketSize=MAX_DATAGRAM)
        self.retarget(hosts)

    def retarget(self, hosts: Sequence[str]) -> None:
        """Subscribe at C{hosts} from now on."""
        if tuple(hosts) == self.hosts:
            return
        self.hosts = tuple(hosts)
        self._retry = FIRST_RETRY
        self._subscribe()

    def stop(self) -> None:
        """End the subscription (telling the node, once) and let go of the socket."""
        self._cancel()
        if self.transport is not None:
            self._send(Subscribe(self.instance, 0))
            self.transport.stopListening()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _subscribe(self) -> None:
        self._cancel()
        self.confirmed = False
        self._send(Subscribe(self.instance, int(self.settings.ttl * 1000)))
        self._timer = self.reactor.callLater(self._retry, self._unanswered)

    def _unanswered(self) -> None:
        self._retry = min(self._retry * 2, self.settings.ttl / 3)
        self._subscribe()

    def _send(self, message: Subscribe | NotifyAck, to: Sequence[str] | None = None) -> None:
        if self.transport is None:
            return
        for host in self.hosts if to is None else to:
            try:
                self.transport.write(self.auth.seal(message, 0), (host, self.settings.port))
            except (OSError, WireError) as e:
                self.log.debug("Cannot send to {host}: {error}", host=host, error=e)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if addr[0] not in self.hosts:
            return
        try:
            envelope = self.auth.open(datagram, addr[0])
        except Rejected as e:
            self.log.debug("Rejected a message from {host}: {error}", host=addr[0], error=e)
            return
        notify = envelope.message
        if not isinstance(notify, Notify) or instanceKey(notify.instanceName) != instanceKey(
                self.instance):
            return
        self._send(NotifyAck(notify.instanceName, notify.change), [addr[0]])
        if not notify.ttl:
            # Refused, or ended by a node that stops: subscribe again soon
            # (the next active takes it), backing off while refused.
            self._cancel()
            self._timer = self.reactor.callLater(self._retry, self._unanswered)
        elif not self.confirmed:
            self.confirmed = True
            self._retry = FIRST_RETRY
            self._cancel()
            self._timer = self.reactor.callLater(self.settings.ttl / 3, self._subscribe)
        if (envelope.sender, notify.change) == self.last or not notify.registrations:
            return
        self.last = (envelope.sender, notify.change)
        self.notified(candidatesOf(notify.registrations, notify.hosts, addr[0]), addr[0])
