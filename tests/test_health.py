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
from srp.server.health import FLAP_WINDOW, Health, HealthMonitor, HealthSettings
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
