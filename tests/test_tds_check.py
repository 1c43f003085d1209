"""
The C{tds} health check: an MS-TDS PRELOGIN, answered by a PRELOGIN.  On a
L{MemoryReactorClock} for its timing, and against real listeners on
loopback: srp.testing's PRELOGIN server (up), a listener that accepts and
never answers (down), a closed port (down).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo
from srp.server.checks import TcpCheck, TDSCheck, checkNamed
from srp.testing.processes import stopProcess
from srp.testing.tds import preloginServer
from srp.wire.tds import preloginRequest, preloginResponse
from tests.test_transports_processes import closedPort
from tests.test_verifiers import portOf

SALES = InstanceInfo("SRV", "SALES", tcp=1433)


class ClockTests(SynchronousTestCase):
    """The exchange and its deadline, with no sockets."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def connect(self) -> StringTransportWithDisconnection:
        """Complete the check's connection attempt; the transport it writes to."""
        host, port, factory, *_ = self.reactor.tcpClients[-1]
        self.assertEqual((host, port), ("10.0.0.1", 1433))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def test_found_by_name(self) -> None:
        self.assertIsInstance(checkNamed("tds"), TDSCheck)
        verifyObject(IHealthCheck, TDSCheck())

    def test_a_prelogin_answer_is_up(self) -> None:
        checked = TDSCheck().check(self.reactor, "10.0.0.1", SALES, 1.0)
        transport = self.connect()
        self.assertEqual(transport.value(), preloginRequest("SALES"))
        transport.protocol.dataReceived(preloginResponse(True))
        self.assertIsNone(self.successResultOf(checked))
        self.assertFalse(transport.connected)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_listener_that_never_answers_is_down_after_the_timeout(self) -> None:
        checked = TDSCheck().check(self.reactor, "10.0.0.1", SALES, 1.0)
        transport = self.connect()
        self.reactor.advance(0.999)
        self.assertNoResult(checked)
        self.reactor.advance(0.001)
        failure = self.failureResultOf(checked, ConnectError)
        self.assertIn("no PRELOGIN answer within 1 s", str(failure.value))
        self.assertFalse(transport.connected)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_connection_that_never_completes_is_down_after_the_timeout(self) -> None:
        checked = TDSCheck().check(self.reactor, "10.0.0.1", SALES, 0.5)
        self.reactor.advance(0.5)
        self.failureResultOf(checked, ConnectError)
        self.assertTrue(self.reactor.connectors[-1].stoppedConnecting)

    def test_another_instance_is_down(self) -> None:
        checked = TDSCheck().check(self.reactor, "10.0.0.1", SALES, 1.0)
        self.connect().protocol.dataReceived(preloginResponse(False))
        failure = self.failureResultOf(checked, ConnectError)
        self.assertIn("not instance SALES (PRELOGIN INSTOPT refused)", str(failure.value))

    def test_garbage_is_down(self) -> None:
        checked = TDSCheck().check(self.reactor, "10.0.0.1", SALES, 1.0)
        self.connect().protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.failureResultOf(checked, ConnectError)

    def test_no_entry_is_down(self) -> None:
        checked = TDSCheck().check(self.reactor, "10.0.0.1", InstanceInfo("SRV", "X"), 1.0)
        self.assertIn("no tcp, np or via", str(self.failureResultOf(checked, ConnectError).value))


class Silent(Protocol):
    """Accepts and never answers, as a stopped (SIGSTOP) server's kernel does."""


class LoopbackTests(TestCase):
    """Against real listeners."""

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return portOf(port)

    async def test_prelogin_server_is_up(self) -> None:
        info = InstanceInfo("SRV", "SALES", tcp=self.listen(preloginServer("SALES")))
        checked = TDSCheck().check(reactor, "127.0.0.1", info, 2.0)
        self.assertEqual(await checked.addCallback(lambda _: "up"), "up")

    async def test_a_silent_listener_is_down(self) -> None:
        info = InstanceInfo("SRV", "SALES", tcp=self.listen(ServerFactory.forProtocol(Silent)))
        with self.assertRaises(ConnectError) as raised:
            await TDSCheck().check(reactor, "127.0.0.1", info, 0.3)
        self.assertIn("no PRELOGIN answer within 0.3 s", str(raised.exception))

    async def test_connection_refused_is_down(self) -> None:
        info = InstanceInfo("SRV", "SALES", tcp=closedPort("127.0.0.1"))
        with self.assertRaises(ConnectError):
            await TDSCheck().check(reactor, "127.0.0.1", info, 2.0)


SERVER = ("from twisted.internet import reactor\n"
          "from srp.testing.tds import preloginServer\n"
          "port = reactor.listenTCP(0, preloginServer('SALES'), interface='127.0.0.1')\n"
          "print(port.getHost().port, flush=True)\n"
          "reactor.run()\n")


class StoppedServerTests(TestCase):
    """A real PRELOGIN server process, stopped with SIGSTOP."""

    async def test_up_to_tcp_down_to_tds(self) -> None:
        server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True)
        self.addCleanup(stopProcess, server)
        assert server.stdout is not None
        info = InstanceInfo("SRV", "SALES", tcp=int(server.stdout.readline()))
        checked = TDSCheck().check(reactor, "127.0.0.1", info, 2.0)
        self.assertEqual(await checked.addCallback(lambda _: "up"), "up")
        os.kill(server.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, server.pid, signal.SIGCONT)
        self.assertIsNone(TcpCheck().check(reactor, "127.0.0.1", info, 0.5))
        with self.assertRaises(ConnectError) as raised:
            await TDSCheck().check(reactor, "127.0.0.1", info, 0.5)
        self.assertIn("no PRELOGIN answer within 0.5 s", str(raised.exception))
