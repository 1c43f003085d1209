"""
Load generators for fail-over tests, benchmarks and the demo.

L{RequestStream} sends [MC-SQLR] requests at a steady rate on the wall
clock, from the calling thread, and records which were answered
(L{Exchange}); L{LineRequester} is a protocol that streams numbered
requests through a (fail-over) connection on any L{IReactorTime}.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import time
from collections.abc import Callable, Sequence

from attrs import frozen
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.interfaces import IFailoverAware, IIdleAware
from srp.testing.history import Answer


@frozen
class Exchange:
    """One request of a L{RequestStream}: when it was sent and when (if) answered."""

    sentAt: float
    answeredAt: float | None
    reply: bytes | None


class RequestStream:
    """
    Sends one [MC-SQLR] request to C{target} at a steady C{rate} and records
    which are answered within C{timeout}: the client side of fail-over
    tests and benchmarks, run in the calling thread.

    Each request in flight has a socket of its own, so every reply is
    matched to its request although [MC-SQLR] replies carry no id.  With
    C{resend}, an unanswered request is sent again every C{resend} seconds
    until its timeout, as FreeTDS and tedious do.
    """

    def __init__(self, target: tuple[str, int], request: bytes, rate: float = 100.0,
                 timeout: float = 0.25, resend: float | None = None) -> None:
        self.target = target
        self.request = request
        self.rate = rate
        self.timeout = timeout
        self.resend = resend
        self.exchanges: list[Exchange] = []

    def run(self, duration: float,
            at: Sequence[tuple[float, Callable[[], object]]] = ()) -> list[Exchange]:
        """
        Send for C{duration} seconds, calling each C{at} action C{(delay, action)}
        C{delay} seconds after the start; return every exchange, in order.
        """
        pending = sorted(at, key=lambda item: item[0])
        idle: list[socket.socket] = []
        inFlight: dict[socket.socket, float] = {}
        resent: dict[socket.socket, int] = {}
        selector = selectors.DefaultSelector()
        start = time.monotonic()
        nextSend = start
        try:
            while True:
                now = time.monotonic()
                while pending and now - start >= pending[0][0]:
                    pending.pop(0)[1]()
                    now = time.monotonic()
                if now - start >= duration and not inFlight:
                    break
                if now - start < duration and now >= nextSend:
                    sock = idle.pop() if idle else self._newSocket(selector)
                    try:
                        sock.sendto(self.request, self.target)
                    except OSError:
                        self.exchanges.append(Exchange(now, None, None))
                        idle.append(sock)
                    else:
                        inFlight[sock] = now
                    nextSend += 1.0 / self.rate
                for sock, sentAt in list(inFlight.items()):
                    if self.resend is not None and (now - sentAt) // self.resend > (
                            resent.get(sock, 0)):
                        resent[sock] = resent.get(sock, 0) + 1
                        with contextlib.suppress(OSError):
                            sock.sendto(self.request, self.target)
                    if now - sentAt > self.timeout:
                        del inFlight[sock]
                        resent.pop(sock, None)
                        self.exchanges.append(Exchange(sentAt, None, None))
                        selector.unregister(sock)
                        sock.close()
                wait = max(0.0, min(nextSend - time.monotonic(), 0.005))
                for key, _ in selector.select(wait):
                    sock = key.fileobj  # type: ignore[assignment]
                    try:
                        reply = sock.recv(65535)
                    except OSError:
                        continue
                    if sock in inFlight:
                        sentAt = inFlight.pop(sock)
                        resent.pop(sock, None)
                        self.exchanges.append(Exchange(sentAt, time.monotonic(), reply))
                        idle.append(sock)
        finally:
            for sock in [*idle, *inFlight]:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sock)
                sock.close()
            selector.close()
        self.exchanges.sort(key=lambda e: e.sentAt)
        return self.exchanges

    def _newSocket(self, selector: selectors.BaseSelector) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        return sock


@implementer(IFailoverAware, IIdleAware)
class LineRequester(LineReceiver):
    """
    Sends numbered request lines at a steady C{rate} through a (fail-over)
    connection to an echo-like server that answers C{NAME N}, resends the
    ones unanswered after C{retry} seconds, and records every answer: the
    client of C{make demo} and of the fail-over tests.
    """

    delimiter = b"\n"

    def __init__(self, clock: IReactorTime, rate: float = 50.0, retry: float = 0.2) -> None:
        self.clock = clock
        self.rate = rate
        self.retry = retry
        self.sent: dict[int, float] = {}
        #: Request number to (time answered, server name), first answer only.
        self.answers: dict[int, tuple[float, str]] = {}
        #: Every answer, in the order they came (L{srp.testing.history}).
        self.history: list[Answer] = []
        self.failovers: list[tuple[float, str]] = []
        self.lost: Failure | None = None
        #: Request number to when it was last sent again, unanswered after C{retry}.
        self.resent: dict[int, float] = {}
        self._awaited: set[int] = set()
        self._next = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def connectionMade(self) -> None:
        self._loop.start(1.0 / self.rate)

    def stop(self) -> None:
        """Stop sending."""
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.sent[self._next] = now
        self._awaited.add(self._next)
        self.sendLine(str(self._next).encode())
        self._next += 1
        for number, at in list(self.sent.items()):
            if number not in self.answers and now - at > self.retry:
                self.sendLine(str(number).encode())
                self.sent[number] = now
                self.resent[number] = now

    def lineReceived(self, line: bytes) -> None:
        name, _, number = line.decode("ascii", "replace").partition(" ")
        if number.isdigit():
            now = self.clock.seconds()
            self._awaited.discard(int(number))
            self.answers.setdefault(int(number), (now, name))
            self.history.append(Answer(now, int(number), name))

    def failedOver(self, previous: IAddress | None, current: IAddress) -> None:
        self.failovers.append((self.clock.seconds(), str(current)))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = reason
        self.stop()

    def idle(self) -> bool:
        """Whether every request sent has been answered."""
        return not self._awaited

    def unanswered(self) -> list[int]:
        """Requests sent and never answered."""
        return [n for n in self.sent if n not in self.answers]

    def servers(self) -> list[str]:
        """The server names in the order they answered, runs collapsed."""
        names: list[str] = []
        for _, (_, name) in sorted(self.answers.items()):
            if not names or names[-1] != name:
                names.append(name)
        return names

    def longestGap(self, after: float = 0.0) -> float:
        """The longest time between two consecutive answers (by arrival) after C{after}."""
        times = sorted(at for at, _ in self.answers.values() if at >= after)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
