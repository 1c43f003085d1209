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
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo

#: Seconds in which earlier falls count towards damping a flapping instance.
FLAP_WINDOW = 60.0
#: The most a flapping instance's rise is multiplied by.
MAX_RISE_FACTOR = 16


@frozen
class HealthSettings:
    """How an instance is checked: which check, how often, and when it changes state."""

    check: str = "tcp"
    interval: float = 0.25
    fall: int = 3
    rise: int = 2
    #: Seconds a single check may take before it counts as a failure.
    timeout: float = 0.5


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
                 counters: Counter[str] | None = None) -> None:
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
        self._loop = LoopingCall(self._run)
        self._loop.clock = clock

    def start(self) -> None:
        """Start checking, the first check at once."""
        self._loop.start(self.settings.interval, now=True)

    def stop(self) -> None:
        """Stop checking."""
        if self._loop.running:
            self._loop.stop()

    def neededToRise(self) -> int:
        """Successes in a row this instance needs now to be marked up again."""
        now = self.clock.seconds()
        self._falls = [at for at in self._falls if now - at < FLAP_WINDOW]
        factor: int = min(2 ** max(len(self._falls) - 1, 0), MAX_RISE_FACTOR)
        return self.settings.rise * factor

    def _run(self) -> Deferred[None]:
        host, info = self.target()
        self.counters["health_checks"] += 1
        # A check that raises counts as a failed check, not a stopped monitor.
        result = maybeDeferred(self.check.check, self.clock, host, info, self.settings.timeout)
        result.addCallbacks(self._succeeded, self._failed)
        return result

    def _succeeded(self, _: Any) -> None:
        if self.health.up:
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= self.neededToRise():
            self._change(Health(True, self.clock.seconds()))

    def _failed(self, reason: Failure) -> None:
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
