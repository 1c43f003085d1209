"""
Instance health checks: the monitor's fall, rise and damping on a L{Clock},
and the built-in checks against real listeners on loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo
from srp.server.checks import ConnectCheck, NoCheck
from srp.server.health import FLAP_WINDOW, CheckSchedule, Health, HealthMonitor, HealthSettings
from tests.test_transports_processes import closedPort
from tests.test_verifiers import echoFactory, portOf

SALES = InstanceInfo("SRV", "SALES", tcp=1433)


@implementer(IHealthCheck)
class ScriptedCheck:
    """A check whose answers the test sets: alive or not."""

    name = "scripted"

    def __init__(self) -> None:
        self.alive = True
        self.asked: list[tuple[str, InstanceInfo, float]] = []

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None]:
        self.asked.append((host, info, timeout))
        return succeed(None) if self.alive else fail(ConnectError(string="refused"))


class MonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.check = ScriptedCheck()
        self.changes: list[tuple[str, Health]] = []
        self.monitor = HealthMonitor(
            self.clock, "SALES", self.check, lambda: ("127.0.0.2", SALES),
            HealthSettings(check="scripted", interval=0.25, fall=3, rise=2, timeout=0.5),
            lambda name, health: self.changes.append((name, health)))
        self.monitor.start()
        self.addCleanup(self.monitor.stop)

    def advance(self, checks: int) -> None:
        for _ in range(checks):
            self.clock.advance(0.25)

    def test_checks_every_interval_with_target_and_timeout(self) -> None:
        self.advance(3)
        self.assertEqual(self.check.asked, [("127.0.0.2", SALES, 0.5)] * 4)
        self.assertEqual(self.changes, [])
        self.assertTrue(self.monitor.health.up)

    def test_down_after_fall_failures_in_a_row(self) -> None:
        self.check.alive = False
        self.advance(2)
        self.assertEqual(self.changes, [])
        self.advance(1)
        refused = str(ConnectError(string="refused"))
        self.assertEqual(self.changes, [("SALES", Health(False, 0.75, refused))])
        self.assertFalse(self.monitor.health.up)

    def test_a_success_resets_the_fall_count(self) -> None:
        self.check.alive = False
        self.advance(1)
        self.check.alive = True
        self.advance(1)
        self.check.alive = False
        self.advance(2)
        self.assertEqual(self.changes, [])
        self.advance(1)
        self.assertEqual(len(self.changes), 1)

    def test_up_again_after_rise_successes(self) -> None:
        self.check.alive = False
        self.advance(3)
        self.check.alive = True
        self.advance(1)
        self.assertFalse(self.monitor.health.up)
        self.advance(1)
        self.assertEqual(self.changes[-1], ("SALES", Health(True, 1.25)))

    def test_a_flapping_instance_needs_more_successes_each_time(self) -> None:
        rises = []
        for _ in range(6):
            self.check.alive = False
            self.advance(3)
            self.assertFalse(self.monitor.health.up)
            self.check.alive = True
            needed = 0
            while not self.monitor.health.up:
                self.advance(1)
                needed += 1
            rises.append(needed)
        self.assertEqual(rises, [2, 4, 8, 16, 32, 32])
        self.assertEqual(len(self.changes), 12)

    def test_damping_wears_off(self) -> None:
        for _ in range(3):
            self.check.alive = False
            self.advance(3)
            self.check.alive = True
            self.advance(40)
        self.clock.advance(FLAP_WINDOW)
        self.assertEqual(self.monitor.neededToRise(), 2)


class BuiltInCheckTests(TestCase):
    def test_they_provide_the_interface(self) -> None:
        for check in (NoCheck(), ConnectCheck()):
            self.assertTrue(verifyObject(IHealthCheck, check))

    async def test_connect_check_passes_on_a_listener(self) -> None:
        port = reactor.listenTCP(0, echoFactory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        info = InstanceInfo("SRV", "SALES", tcp=portOf(port))
        checked = ConnectCheck().check(reactor, "127.0.0.1", info, 2.0)
        self.assertEqual(await checked.addCallback(lambda _: "alive"), "alive")

    async def test_connect_check_fails_on_a_closed_port(self) -> None:
        info = InstanceInfo("SRV", "SALES", tcp=closedPort("127.0.0.1"))
        with self.assertRaises(ConnectError):
            await ConnectCheck().check(reactor, "127.0.0.1", info, 2.0)

    async def test_connect_check_fails_without_entries(self) -> None:
        with self.assertRaises(ConnectError) as raised:
            await ConnectCheck().check(reactor, "127.0.0.1", InstanceInfo("SRV", "X"), 2.0)
        self.assertIn("no tcp, np or via", str(raised.exception))

    def test_no_check_always_passes(self) -> None:
        self.assertIsNone(self.successResultOf(
            NoCheck().check(reactor, "127.0.0.1", InstanceInfo("SRV", "X"), 1.0)))


@implementer(IHealthCheck)
class PendingCheck:
    """A check that answers only when the test fires its Deferred."""

    name = "pending"

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None]:
        self.pending.append(Deferred())
        return self.pending[-1]


class ScheduleTests(SynchronousTestCase):
    def monitor(self, clock: Clock, schedule: CheckSchedule, check: IHealthCheck,
                name: str = "SALES") -> HealthMonitor:
        return HealthMonitor(clock, name, check, lambda: ("127.0.0.2", SALES),
                             HealthSettings(check=check.name, interval=0.25), lambda *a: None,
                             schedule=schedule)

    def test_monitors_check_together_at_multiples_of_the_interval(self) -> None:
        clock, check = Clock(), ScriptedCheck()
        schedule = CheckSchedule(clock)
        clock.advance(0.1)
        self.monitor(clock, schedule, check, "A").start()
        clock.advance(0.1)
        self.monitor(clock, schedule, check, "B").start()
        self.assertEqual(len(clock.getDelayedCalls()), 1, "one timer for both")
        self.assertEqual(check.asked, [])
        clock.advance(0.05)
        self.assertEqual(len(check.asked), 2)
        clock.advance(0.25)
        self.assertEqual(len(check.asked), 4)

    def test_the_last_one_stopped_stops_the_timer(self) -> None:
        clock, check = Clock(), ScriptedCheck()
        schedule = CheckSchedule(clock)
        first, second = (self.monitor(clock, schedule, check, name) for name in "AB")
        first.start()
        second.start()
        first.stop()
        clock.advance(0.25)
        self.assertEqual(len(check.asked), 3, "both at 0, the second at 0.25")
        second.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_check_still_running_is_not_started_again(self) -> None:
        clock, check = Clock(), PendingCheck()
        monitor = self.monitor(clock, CheckSchedule(clock), check)
        monitor.start()
        clock.advance(0.25)
        self.assertEqual(len(check.pending), 1)
        check.pending[0].callback(None)
        clock.advance(0.25)
        self.assertEqual(len(check.pending), 2)
        self.assertEqual(monitor.counters["health_checks"], 2)

    def test_a_check_that_raises_has_failed(self) -> None:
        @implementer(IHealthCheck)
        class Raising:
            name = "raising"

            def check(self, reactor: Any, host: str, info: InstanceInfo,
                      timeout: float) -> None:
                raise ConnectError(string="nothing there")

        clock = Clock()
        monitor = self.monitor(clock, CheckSchedule(clock), Raising())
        monitor.start()
        clock.advance(0.25)
        clock.advance(0.25)
        self.assertFalse(monitor.health.up)
        self.assertIn("nothing there", monitor.health.reason)
        self.assertEqual(monitor.counters["health_failures"], 3)
