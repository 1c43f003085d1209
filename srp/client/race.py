"""
A race between the places of an instance: several connection attempts at
once; the best place that connects (and passes verification) wins, the
others are cancelled.

The C{srp:} endpoint runs one when the place it used fails: the places the
cached resolution already lists start at once, the places a re-resolve
running beside them adds start when it answers, and the places suspected
dead are tried only when nothing else is left.  The first place to connect
wins unless a better one (L{rankOf}: the priority the cluster gave it) is
still connecting: that one is waited for, a moment, so that a live standby
the cluster prefers is not passed over for one that answered a millisecond
sooner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.python.failure import Failure

from srp.client.resolver import Candidate

#: Where an instance can be reached, as the endpoint tells places apart.
Place = tuple[str, int | None]
#: How much a place is preferred: the lower, the better (L{rankOf}).
Rank = tuple[bool, int]

#: Seconds a place that connected waits for a better place still connecting.
PREFER_FOR = 0.1


def placeOf(candidate: Candidate) -> Place:
    """The place of C{candidate}: its node's host and its tcp port."""
    return (candidate.host, candidate.info.tcp)


def rankOf(candidate: Candidate) -> Rank:
    """How much C{candidate} is preferred, lowest first: live before down, then by priority."""
    return (candidate.down, candidate.priority)


class CandidateRace:
    """
    Tries candidates at once; L{done} fires with the protocol of the best
    place connected, or with L{None} once every attempt failed and L{close}
    was called (no more candidates will come).

    A place that connects while a better one (L{rankOf}) is still connecting
    is held: the better one wins if it connects within C{preferFor} seconds,
    else the best place held wins then (or as soon as no better one is left).

    @param attempt: connects to one candidate; fires with the protocol or
        L{None} if it could not (failing only when cancelled).
    @param tried: places already tried by the caller: not tried again.
    @param whenIdle: called each time the last running attempt failed
        before L{close}: the moment to start more candidates, or to close.
    @param clock: what times C{preferFor}; without one, the first place
        connected wins at once.
    """

    def __init__(self, attempt: Callable[[Candidate], Deferred[IProtocol | None]],
                 tried: Iterable[Place] = (),
                 whenIdle: Callable[[], None] = lambda: None,
                 clock: IReactorTime | None = None, preferFor: float = PREFER_FOR) -> None:
        self._attempt = attempt
        self._whenIdle = whenIdle
        self._clock = clock
        self.preferFor = preferFor
        self.tried: set[Place] = set(tried)
        self.done: Deferred[IProtocol | None] = Deferred(lambda _: self._abandon())
        self._pending: dict[Deferred[IProtocol | None], Rank] = {}
        #: The best place connected so far, while a better one may still connect.
        self._held: tuple[IProtocol, Rank] | None = None
        self._timer: IDelayedCall | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether an attempt is still under way."""
        return bool(self._pending)

    def start(self, candidates: Iterable[Candidate]) -> None:
        """Start an attempt on each of C{candidates} not tried yet."""
        for candidate in candidates:
            place = placeOf(candidate)
            if self.done.called or place in self.tried:
                continue
            self.tried.add(place)
            attempt = self._attempt(candidate)
            self._pending[attempt] = rankOf(candidate)
            attempt.addBoth(self._finished, attempt)

    def close(self) -> None:
        """No more candidates: once the running attempts fail, the race is lost."""
        self._closed = True
        self._settle()

    def _finished(self, result: IProtocol | Failure | None,
                  attempt: Deferred[IProtocol | None]) -> None:
        rank = self._pending.pop(attempt)
        if isinstance(result, Failure):
            result.trap(CancelledError)
            return
        if result is not None:
            if self.done.called:
                # Connected as the winner was chosen: nobody will use it.
                _close(result)
                return
            if self._held is None or rank < self._held[1]:
                if self._held is not None:
                    _close(self._held[0])
                self._held = (result, rank)
            else:
                _close(result)
        self._settle()

    def _settle(self) -> None:
        """Declare the winner, or the race lost, or wait: whichever is due now."""
        if self.done.called:
            return
        if self._held is not None:
            better = any(rank < self._held[1] for rank in self._pending.values())
            if not better or self._clock is None or self.preferFor <= 0:
                self._win()
            elif self._timer is None:
                self._timer = self._clock.callLater(self.preferFor, self._win)
        elif not self._pending:
            if self._closed:
                self.done.callback(None)
            else:
                self._whenIdle()

    def _win(self) -> None:
        """The place held wins: the others are cancelled."""
        assert self._held is not None
        winner, self._held = self._held[0], None
        self._stopTimer()
        self._cancelAll()
        self.done.callback(winner)

    def _abandon(self) -> None:
        """The race is cancelled: every attempt with it, and the place held closed."""
        self._stopTimer()
        if self._held is not None:
            _close(self._held[0])
            self._held = None
        self._cancelAll()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancelAll(self) -> None:
        for attempt in list(self._pending):
            attempt.cancel()


def _close(protocol: IProtocol) -> None:
    """Close the connection of C{protocol}, which nobody will use."""
    protocol.transport.loseConnection()  # type: ignore[attr-defined]
