"""
Sealing and opening cluster messages: the cluster key, sequence numbers and replay checks.

Shared by nodes and by the clients that speak cluster messages to them
(C{srp status}, the extended resolve).
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter, OrderedDict, deque

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from srp.wire.cluster import ClusterMessage, ClusterWireError, Envelope, decodeEnvelope

#: How far back (in seconds) a message's sequence may date: older ones are stale.
FRESHNESS = 30.0
#: How many recent sequence numbers of each sender are remembered, so that
#: reordered messages are accepted once and replays of them refused.
REPLAY_WINDOW = 64
#: How many senders' replay windows are kept (the least recently heard go first).
MAX_SENDERS = 4096


def randomNodeId() -> int:
    """A fresh 64-bit sender id: every node (and every client) start is a new sender."""
    return random.SystemRandom().getrandbits(64) or 1


class Rejected(Exception):
    """A cluster message that must not be applied; C{reason} is one word for counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def isLoopback(host: str) -> bool:
    """Whether C{host} is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@define
class _Window:
    """The last L{REPLAY_WINDOW} sequence numbers seen from one sender."""

    recent: deque[int]

    def accept(self, sequence: int) -> None:
        if sequence in self.recent or (
            len(self.recent) == REPLAY_WINDOW and sequence < min(self.recent)
        ):
            raise Rejected("replayed", f"sequence {sequence} was seen or is too old")
        self.recent.append(sequence)


@define
class ClusterAuthenticator:
    """
    Seals outgoing cluster messages and checks incoming ones.

    Sequence numbers are microseconds of the sender's clock, strictly
    increasing: a receiver rejects one it has seen (replayed) or one older
    than L{FRESHNESS} seconds (stale), so old captures cannot be replayed
    even to a node that never heard the sender.  Without a key, only
    loopback sources are accepted.
    """

    clock: IReactorTime
    cluster: int
    nodeId: int
    key: bytes = b""
    rejected: Counter[str] = field(factory=Counter)
    _last: int = 0
    _windows: OrderedDict[int, _Window] = field(factory=OrderedDict)

    def seal(self, message: ClusterMessage, epoch: int) -> bytes:
        """The datagram carrying C{message} from this node at C{epoch}."""
        self._last = max(self._last + 1, int(self.clock.seconds() * 1_000_000))
        return Envelope(message, self.cluster, self.nodeId, epoch, self._last).encode(self.key)

    def open(self, datagram: bytes, source: str) -> Envelope:
        """
        Check and decode a cluster message from C{source}.

        @raise Rejected: with the reason, counted in C{rejected}.
        """
        try:
            if not self.key and not isLoopback(source):
                raise Rejected("unauthenticated",
                               "the cluster has no key: only loopback sources are accepted")
            try:
                envelope = decodeEnvelope(datagram, self.key, self.cluster)
            except ClusterWireError as e:
                raise Rejected(e.reason, str(e)) from None
            if envelope.sender == self.nodeId:
                raise Rejected("self", "message from this node's own id")
            self._checkSequence(envelope.sender, envelope.sequence)
        except Rejected as e:
            self.rejected[e.reason] += 1
            raise
        return envelope

    def _checkSequence(self, sender: int, sequence: int) -> None:
        if sequence / 1_000_000 < self.clock.seconds() - FRESHNESS:
            raise Rejected("stale", f"sequence dates from more than {FRESHNESS:g} s ago")
        window = self._windows.get(sender)
        if window is None:
            window = self._windows[sender] = _Window(deque(maxlen=REPLAY_WINDOW))
            if len(self._windows) > MAX_SENDERS:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(sender)
        window.accept(sequence)
