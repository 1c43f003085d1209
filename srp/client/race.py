"""
A race between the places of an instance: several connection attempts at
once, the first that connects (and passes verification) wins, the others
are cancelled.

The C{srp:} endpoint runs one when the place it used fails: the places the
cached resolution already lists start at once, the places a re-resolve
running beside them adds start when it answers, and the places suspected
dead are tried only when nothing else is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IProtocol
from twisted.python.failure import Failure

from srp.client.resolver import Candidate

#: Where an instance can be reached, as the endpoint tells places apart.
Place = tuple[str, int | None]


def placeOf(candidate: Candidate) -> Place:
    """The place of C{candidate}: its node's host and its tcp port."""
    return (candidate.host, candidate.info.tcp)


class CandidateRace:
    """
    Tries candidates at once; L{done} fires with the first protocol
    connected, or with L{None} once every attempt failed and L{close} was
    called (no more candidates will come).

    @param attempt: connects to one candidate; fires with the protocol or
        L{None} if it could not (failing only when cancelled).
    @param tried: places already tried by the caller: not tried again.
    @param whenIdle: called each time the last running attempt failed
        before L{close}: the moment to start more candidates, or to close.
    """

    def __init__(self, attempt: Callable[[Candidate], Deferred[IProtocol | None]],
                 tried: Iterable[Place] = (),
                 whenIdle: Callable[[], None] = lambda: None) -> None:
        self._attempt = attempt
        self._whenIdle = whenIdle
        self.tried: set[Place] = set(tried)
        self.done: Deferred[IProtocol | None] = Deferred(lambda _: self._cancelAll())
        self._pending: list[Deferred[IProtocol | None]] = []
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
            self._pending.append(attempt)
            attempt.addBoth(self._finished, attempt)

    def close(self) -> None:
        """No more candidates: once the running attempts fail, the race is lost."""
        self._closed = True
        if not self._pending and not self.done.called:
            self.done.callback(None)

    def _finished(self, result: IProtocol | Failure | None,
                  attempt: Deferred[IProtocol | None]) -> None:
        self._pending.remove(attempt)
        if isinstance(result, Failure):
            result.trap(CancelledError)
            return
        if result is not None:
            if self.done.called:
                # Connected as the winner was chosen: nobody will use it.
                result.transport.loseConnection()  # type: ignore[attr-defined]
                return
            self._cancelAll()
            self.done.callback(result)
        elif not self._pending and not self.done.called:
            if self._closed:
                self.done.callback(None)
            else:
                self._whenIdle()

    def _cancelAll(self) -> None:
        for attempt in list(self._pending):
            attempt.cancel()
