"""
Noticing that this process did not run for a while.

A node that was stopped (SIGSTOP, a frozen VM or container, a debugger) or
starved of CPU may have been replaced meanwhile: its passives presumed it
dead and one took over.  When it runs again, the reactor reads the
datagrams that wait before it runs the timers that fell due, so a check in
the periodic tick alone comes too late: the node would answer clients
first, from what it knew before the pause.  L{PauseWatch} is asked before
each reply as well, and holds replies back from the moment it notices a
pause until the role had time to learn whether it was replaced.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime


class PauseWatch:
    """
    Watches the periodic tick of a node for gaps.

    @ivar limit: a gap between two ticks longer than this, in seconds, is a
        pause.
    @ivar quiet: how long replies are held back after a pause is noticed.
    @ivar onPause: called with the gap when a pause is noticed; returns
        whether replies must be held back (only an active that may have been
        replaced needs to).
    """

    def __init__(self, clock: IReactorTime, limit: float, quiet: float,
                 onPause: Callable[[float], bool]) -> None:
        self.clock = clock
        self.limit = limit
        self.quiet = quiet
        self.onPause = onPause
        #: When the tick last ran; L{None} while the node does not tick.
        self.lastTick: float | None = None
        self.quietUntil = float("-inf")
        # Asked before every reply: the clock's bound method, and the moment
        # the tick is overdue, spare that path an attribute walk and a sum.
        self._seconds = clock.seconds
        self._overdueAt = float("inf")

    def start(self) -> None:
        """The node ticks from now on."""
        self._ticks(self.clock.seconds())

    def stop(self) -> None:
        """The node no longer ticks: nothing is a pause."""
        self.lastTick = None
        self._overdueAt = float("inf")
        self.quietUntil = float("-inf")

    def ticked(self) -> None:
        """The tick runs now; notice the pause if it came late."""
        self._check(self.clock.seconds())

    def mayAnswer(self) -> bool:
        """
        Whether the node may answer a client now: not while its tick is
        overdue (it has just run again), nor during the quiet time after.
        """
        now = self._seconds()
        if now > self._overdueAt:
            self._check(now)
        return now >= self.quietUntil

    def _ticks(self, now: float) -> None:
        self.lastTick = now
        self._overdueAt = now + self.limit

    def _check(self, now: float) -> None:
        last = self.lastTick
        self._ticks(now)
        if last is not None and now - last > self.limit and self.onPause(now - last):
            self.quietUntil = now + self.quiet
