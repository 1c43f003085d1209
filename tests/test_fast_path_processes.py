"""
The fast path with real processes, set up as a new user would: two nodes on
one loopback address, an application of its own on the public API
(C{clientFromString(reactor, "srp:ADDRESS/ECHO")} and a L{FailoverClient},
a numbered line every 10 ms), and the primary killed with kill -9 — its
server process alone, or its whole node — with either node the cluster's
active.  The standby is known from the cached resolution, so the gap stays
far under the time the cluster needs to notice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from srp.client.endpoint import sharedResolver
from srp.client.failover import FailoverClient
from srp.testing.load import LineRequester
from srp.testing.processes import NodeProcess, freeLoopbackAddress, stopProcess, writeNodeConfig

EXAMPLES = Path(__file__).parent.parent / "examples"
#: The longest gap the application may see, and the request rate.
MAX_GAP, RATE = 0.150, 100


class FastPathTests(TestCase):
    """kill -9 of the primary: the application's longest gap is under 150 ms, nothing lost."""

    timeout = 60

    def setUp(self) -> None:
        self.address = freeLoopbackAddress()
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        # The shared resolver may hold this address from an earlier test.
        sharedResolver(reactor).purge(self.address, "ECHO")

    async def settle(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    def start(self, process: NodeProcess) -> NodeProcess:
        process.start()
        self.addCleanup(process.stop)
        return process

    def echoNode(self, name: str, priority: int) -> NodeProcess:
        """A node that serves the instance in its own process (examples/echo_node.py)."""
        return self.start(NodeProcess(
            self.directory / "none.toml", self.directory / f"{name}.log",
            argv=[sys.executable, str(EXAMPLES / "echo_node.py"), "--listen", self.address,
                  "--name", name, "--priority", str(priority), "--cluster", "srp",
                  "--transports", "tcp"]))

    def echoServer(self, name: str) -> tuple[subprocess.Popen[str], int]:
        """An instance server process of its own (echo_node.py --server-only), and its port."""
        server = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "echo_node.py"), "--server-only",
             "--listen", self.address, "--name", name],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True)
        self.addCleanup(stopProcess, server)
        assert server.stdout is not None
        line = server.stdout.readline()
        self.assertTrue(line.startswith("PORT "), line)
        return server, int(line.split()[1])

    def servedNode(self, name: str, priority: int, port: int) -> NodeProcess:
        """An C{srp serve} node that registers the server at C{port}."""
        config = writeNodeConfig(self.directory / f"{name}.toml", [self.address],
                                 [{"name": "ECHO", "tcp": port, "priority": priority,
                                   "server_name": f"HOST{name}"}],
                                 tables={"cluster": {"name": "srp"}})
        return self.start(NodeProcess(config, self.directory / f"{name}.log"))

    async def primaryActive(self, primaryFirst: bool, separateServers: bool) -> int:
        """
        Start the primary A and the standby B, in the order asked; the PID
        to kill for the primary.
        """
        victims: dict[str, int] = {}
        order = [("A", 0), ("B", 1)] if primaryFirst else [("B", 1), ("A", 0)]
        for index, (name, priority) in enumerate(order):
            if separateServers:
                server, port = self.echoServer(name)
                node = self.servedNode(name, priority, port)
                victims[name] = server.pid
            else:
                node = self.echoNode(name, priority)
                victims[name] = node.pid
            if index == 0:
                # The first node started: wait until it is the cluster's active.
                for _ in range(100):
                    if "Active for cluster" in node.log():
                        break
                    await self.settle(0.05)
                else:
                    self.fail(f"{name} did not become active: {node.log()}")
        await self.settle(1.0)
        return victims["A"]

    async def killThePrimary(self, primaryFirst: bool, separateServers: bool) -> None:
        victim = await self.primaryActive(primaryFirst, separateServers)
        requester = LineRequester(reactor, rate=RATE)
        client = FailoverClient(reactor, clientFromString(reactor, f"srp:{self.address}/ECHO"),
                                requester)
        self.assertIs(await client.connect(), requester)
        self.addCleanup(client.close)
        await self.settle(0.5)
        self.assertEqual(requester.servers(), ["A"])
        killedAt = reactor.seconds()
        os.kill(victim, signal.SIGKILL)
        await self.settle(1.5)
        requester.stop()
        await self.settle(0.3)
        self.assertEqual(requester.servers(), ["A", "B"])
        self.assertEqual((client.failovers, len(requester.failovers)), (1, 1))
        gap = requester.longestGap(after=killedAt - 0.05)
        self.assertLess(gap, MAX_GAP, f"longest gap {gap * 1000:.0f} ms")
        self.assertIsNone(requester.lost)
        self.assertEqual(requester.unanswered(), [])

    async def test_server_killed_primary_node_active(self) -> None:
        await self.killThePrimary(primaryFirst=True, separateServers=True)

    async def test_server_killed_standby_node_active(self) -> None:
        await self.killThePrimary(primaryFirst=False, separateServers=True)

    async def test_node_killed_primary_node_active(self) -> None:
        await self.killThePrimary(primaryFirst=True, separateServers=False)

    async def test_node_killed_standby_node_active(self) -> None:
        await self.killThePrimary(primaryFirst=False, separateServers=False)
