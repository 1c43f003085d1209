"""
Transparent fail-over with real processes: an echo instance served by a
primary and a standby node (examples/echo_node.py), a client streaming
requests through `srp:` and a FailoverClient, and the primary killed,
stopped (SIGSTOP), moved, or dying with the active node.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from srp.client.endpoint import SRPClientEndpoint
from srp.client.failover import FailoverClient, FailoverExhausted
from srp.client.resolver import ClusterResolver
from srp.client.verifiers import HelloVerifier
from srp.testing.load import LineRequester
from srp.testing.processes import NodeProcess, freeLoopbackAddress

ECHO_NODE = Path(__file__).parent.parent / "examples" / "echo_node.py"


class FailoverTests(TestCase):
    """The application's protocol sees one connection and loses no request."""

    timeout = 60

    def setUp(self) -> None:
        self.address = freeLoopbackAddress()
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.nodes: dict[str, NodeProcess] = {}

    def node(self, name: str, priority: int, instance: str = "ECHO") -> NodeProcess:
        process = NodeProcess(self.directory / "none.toml", self.directory / f"{name}.log",
                              argv=[sys.executable, str(ECHO_NODE), "--listen", self.address,
                                    "--name", name, "--priority", str(priority),
                                    "--instance", instance]).start()
        self.nodes[name] = process
        self.addCleanup(self.stopNode, process)
        return process

    def stopNode(self, process: NodeProcess) -> None:
        if process.process is not None and process.process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        process.stop()

    async def settle(self, seconds: float = 1.0) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def connect(self, deadline: float = 30.0) -> tuple[FailoverClient, LineRequester]:
        endpoint = SRPClientEndpoint(reactor, self.address, "ECHO",
                                     ClusterResolver(reactor, clusterName="demo"),
                                     verifier=HelloVerifier(reactor), timeout=0.5)
        requester = LineRequester(reactor, rate=50)
        client = FailoverClient(reactor, endpoint, requester, deadline=deadline)
        self.assertIs(await client.connect(), requester)
        self.assertIsNotNone(endpoint.connectedTo, "connect fires after the endpoint's own")
        self.addCleanup(client.close)
        return client, requester

    def assertNothingLost(self, requester: LineRequester) -> None:
        self.assertIsNone(requester.lost, "the application saw connectionLost")
        late = [n for n in requester.unanswered() if n < max(requester.sent) - 25]
        self.assertEqual(late, [], "requests lost")

    async def activeFirst(self) -> None:
        """Start a node that serves another instance, so that it is the cluster's active."""
        self.node("Z", 0, instance="OTHER")
        await self.settle(0.5)

    async def test_kill_9_of_the_primary(self) -> None:
        await self.activeFirst()
        self.node("A", 0)
        self.node("B", 1)
        await self.settle()
        client, requester = await self.connect()
        await self.settle(0.5)
        self.assertEqual(requester.servers(), ["A"])
        killedAt = reactor.seconds()
        os.kill(self.nodes["A"].pid, signal.SIGKILL)
        await self.settle(2.0)
        self.assertEqual(requester.servers(), ["A", "B"])
        self.assertEqual(client.failovers, 1)
        self.assertLess(requester.longestGap(after=killedAt - 0.1), 0.5)
        self.assertNothingLost(requester)

    async def test_sigstop_of_the_primary_is_detected(self) -> None:
        await self.activeFirst()
        self.node("A", 0)
        self.node("B", 1)
        await self.settle()
        _client, requester = await self.connect()
        await self.settle(0.5)
        stoppedAt = reactor.seconds()
        os.kill(self.nodes["A"].pid, signal.SIGSTOP)
        await self.settle(3.0)
        self.assertEqual(requester.servers(), ["A", "B"])
        self.assertLess(requester.longestGap(after=stoppedAt - 0.1), 1.5)
        self.assertNothingLost(requester)

    async def test_instance_moves_to_a_new_port(self) -> None:
        await self.activeFirst()
        self.node("A", 0)
        await self.settle()
        client, requester = await self.connect()
        await self.settle(0.5)
        oldPort = client.peer.port  # type: ignore[attr-defined]
        os.kill(self.nodes["A"].pid, signal.SIGKILL)
        self.node("A2", 0)
        await self.settle(3.0)
        self.assertEqual(requester.servers(), ["A", "A2"])
        self.assertNotEqual(client.peer.port, oldPort)  # type: ignore[attr-defined]
        self.assertNothingLost(requester)

    async def test_active_node_dies_during_fail_over(self) -> None:
        self.node("A", 0)
        await self.settle(0.5)
        self.node("B", 1)
        await self.settle()
        _client, requester = await self.connect()
        await self.settle(0.5)
        # A is the cluster's active and the primary: both go at once.
        os.kill(self.nodes["A"].pid, signal.SIGKILL)
        await self.settle(4.0)
        self.assertEqual(requester.servers(), ["A", "B"])
        self.assertNothingLost(requester)

    async def test_gives_up_after_the_deadline(self) -> None:
        self.node("A", 0)
        await self.settle()
        _client, requester = await self.connect(deadline=2.0)
        await self.settle(0.3)
        os.kill(self.nodes["A"].pid, signal.SIGKILL)
        ended: Deferred[None] = Deferred()
        reactor.callLater(4.0, ended.callback, None)
        await ended
        assert requester.lost is not None
        self.assertIsInstance(requester.lost.value, FailoverExhausted)
        self.assertIn("could be reached for 2 s", str(requester.lost.value))
