"""
Instance health: is the server behind a registration alive?

Each node checks the instances it registers, as keepalived's C{track_script}
and HAProxy's C{check inter fall rise} do: every C{interval} seconds a check
(L{IHealthCheck}) runs; C{fall} failures in a row mark the instance down,
C{rise} successes in a row mark it up again.  An instance that flaps is
damped: each time it went down in the last L{FLAP_WINDOW} seconds doubles
the successes it needs to rise again (at most L{MAX_RISE_FACTOR} times
C{rise}), so a server that crashes as soon as it starts is not advertised
on every short-lived start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo

#: Seconds in which earlier falls count towards damping a flapping instance.
FLAP_WINDOW = 60.0
#: The most a flapping instance's rise is multiplied by.
MAX_RISE_FACTOR = 16
#: Seconds before a multiple of the interval that count as on it (float rounding).
SAME_MULTIPLE = 0.001
#: Where a node listening on a wildcard address checks its instances.
LOOPBACK_FOR_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}


@frozen
class HealthSettings:
    """How an instance is checked: which check, how often, and when it changes state."""

    check: str = "tcp"
    interval: float = 0.25
    fall: int = 3
    rise: int = 2
    #: Seconds a single check may take before it counts as a failure.
    timeout: float = 0.5


class CheckSchedule:
    """
    Runs checks at every multiple of their interval on the reactor's clock,
    all those of one interval from one timer: the monitors of a node check
    together, in the same reactor turn, so that a check can share work
    between them (as C{tcp} does), and the reactor keeps one timer per
    interval rather than one per instance.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._runs: dict[float, dict[Callable[[], None], None]] = {}
        self._timers: dict[float, IDelayedCall] = {}

    def add(self, interval: float, run: Callable[[], None]) -> None:
        """
        Call C{run} at every multiple of C{interval} seconds; the first time
        at once if now is one, else at the next.
        """
        runs = self._runs.setdefault(interval, {})
        runs[run] = None
        if interval not in self._timers:
            self._schedule(interval)
        if self.clock.seconds() % interval == 0:
            run()

    def remove(self, interval: float, run: Callable[[], None]) -> None:
        """Stop calling C{run}; the last one removed stops the interval's timer."""
        runs = self._runs.get(interval, {})
        runs.pop(run, None)
        if not runs and interval in self._timers:
            timer = self._timers.pop(interval)
            if timer.active():
                timer.cancel()
            self._runs.pop(interval, None)

    def _schedule(self, interval: float) -> None:
        delay = interval - self.clock.seconds() % interval
        if delay < SAME_MULTIPLE:
            delay += interval
        self._timers[interval] = self.clock.callLater(delay, self._tick, interval)

    def _tick(self, interval: float) -> None:
        self._schedule(interval)
        runs = self._runs.get(interval, {})
        for run in list(runs):
            if run in runs:  # not removed by an earlier one
                run()


@frozen
class Health:
    """An instance's state as its node's checks see it, and since when (reactor seconds)."""

    up: bool
    since: float
    #: Why the last check that changed the state failed ("" when up).
    reason: str = ""


class HealthMonitor:
    """
    Runs one instance's check periodically and reports each change of state.

    @ivar health: the current L{Health}; an instance starts up, so that a
        node that has just started advertises its instances at once.
    @ivar counters: where the checks run (C{health_checks}) and failed
        (C{health_failures}) are counted: the node's counters, or the
        monitor's own.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, name: str, check: IHealthCheck,
                 target: Callable[[], tuple[str, InstanceInfo]], settings: HealthSettings,
                 onChange: Callable[[str, Health], None],
                 counters: Counter[str] | None = None,
                 schedule: CheckSchedule | None = None) -> None:
        self.clock = clock
        self.name = name
        self.check = check
        self.target = target
        self.settings = settings
        self.onChange = onChange
        self.health = Health(True, clock.seconds())
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._streak = 0
        self._falls: list[float] = []
        #: When the checks run: shared by the monitors of a node.
        self.schedule = CheckSchedule(clock) if schedule is None else schedule
        self._checking = False

    def start(self) -> None:
        """Start checking (L{CheckSchedule.add})."""
        self.schedule.add(self.settings.interval, self._run)

    def stop(self) -> None:
        """Stop checking."""
        self.schedule.remove(self.settings.interval, self._run)

    def neededToRise(self) -> int:
        """Successes in a row this instance needs now to be marked up again."""
        now = self.clock.seconds()
        self._falls = [at for at in self._falls if now - at < FLAP_WINDOW]
        factor: int = min(2 ** max(len(self._falls) - 1, 0), MAX_RISE_FACTOR)
        return self.settings.rise * factor

    def _run(self) -> None:
        if self._checking:
            return  # the last check has not finished: skip this one
        self.counters["health_checks"] += 1
        try:
            host, info = self.target()
            result = self.check.check(self.clock, host, info, self.settings.timeout)
        except Exception:
            # A check that raises has failed; the monitor goes on.
            self._failed(Failure())
            return
        if result is None:
            self._succeeded(None)
        else:
            self._checking = True
            result.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, _: Any) -> None:
        self._checking = False
        if self.health.up:
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= self.neededToRise():
            self._change(Health(True, self.clock.seconds()))

    def _failed(self, reason: Failure) -> None:
        self._checking = False
        self.counters["health_failures"] += 1
        if not self.health.up:
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= self.settings.fall:
            self._falls.append(self.clock.seconds())
            self._change(Health(False, self.clock.seconds(), reason.getErrorMessage()))

    def _change(self, health: Health) -> None:
        self._streak = 0
        self.health = health
        if health.up:
            self.log.info("Instance {name} is up again ({check} check)", name=self.name,
                          check=self.settings.check)
        else:
            self.log.warn("Instance {name} is down: {fall} {check} checks failed, the last "
                          "with: {reason}", name=self.name, fall=self.settings.fall,
                          check=self.settings.check, reason=health.reason)
        self.onChange(self.name, health)
