"""
Moves pushed to clients, with real processes: two nodes serve SALES (the
primary's node the active), each with a tagged echo server standing in for
its instance; a FailoverClient connected through `srp:...:subscribe=yes`
learns of a graceful switchover before its next write, and that write is
answered by the new place with no gap and nothing resent.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from srp.client.endpoint import SRPClientEndpoint
from srp.client.failover import FailoverClient
from srp.client.resolver import ClusterResolver
from srp.client.subscription import NodeSubscription, SubscribeTo
from srp.interfaces import IFailoverAware
from srp.testing.processes import (
    NodeProcess,
    TaggedEchoProcess,
    freeLoopbackAddress,
    freeTCPPort,
    writeNodeConfig,
)

CLUSTER = "pushed"


@implementer(IFailoverAware)
class Asker(Protocol):
    """Writes a line at a time and records which server answered each."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.moves: list[object] = []
        self._pending = b""
        self._waiting: Deferred[bytes] | None = None

    def ask(self, line: bytes) -> Deferred[bytes]:
        self._waiting = Deferred()
        assert self.transport is not None
        self.transport.write(line + b"\n")
        return self._waiting

    def dataReceived(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        self.answers += lines
        if lines and self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(lines[-1])

    def failedOver(self, previous: object, current: object) -> None:
        self.moves.append((previous, current))


class PushedMoveTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.address = freeLoopbackAddress()
        self.servers = [TaggedEchoProcess(self.address, freeTCPPort(self.address), tag).start()
                        for tag in ("primary", "standby")]
        for server in self.servers:
            self.addCleanup(server.stop)
        self.nodes = [self.node(index) for index in (0, 1)]

    def node(self, index: int) -> NodeProcess:
        config = writeNodeConfig(
            self.directory / f"node{index}.toml", [self.address],
            [{"name": "SALES", "tcp": self.servers[index].port, "priority": index}],
            serverName=f"H{index}", tables={"cluster": {"name": CLUSTER}})
        process = NodeProcess(config, self.directory / f"node{index}.log").start()
        self.addCleanup(process.stop)
        return process

    async def until(self, condition: object, timeout: float = 5.0) -> None:
        deadline = reactor.seconds() + timeout
        while not condition():  # type: ignore[operator]
            self.assertLess(reactor.seconds(), deadline, "timed out")
            await deferLater(reactor, 0.02, lambda: None)

    async def test_a_graceful_switchover_is_learnt_before_the_next_write(self) -> None:
        await self.until(lambda: "Active for cluster" in self.nodes[0].log())
        await self.until(lambda: "Passive in cluster" in self.nodes[1].log())
        endpoint = SRPClientEndpoint(reactor, self.address, "SALES",
                                     ClusterResolver(reactor, clusterName=CLUSTER),
                                     subscribe=SubscribeTo(clusterName=CLUSTER), timeout=1.0)
        asker = Asker()
        client = FailoverClient(reactor, endpoint, asker)
        self.addCleanup(client.close)
        await client.connect()
        self.assertEqual(await asker.ask(b"1"), b"primary:1")
        subscription = endpoint.subscription
        assert isinstance(subscription, NodeSubscription)
        await self.until(lambda: subscription.confirmed)

        # The primary's node (the active) stops gracefully; its server runs on.
        os.kill(self.nodes[0].pid, signal.SIGTERM)
        await self.until(lambda: client.moves == 1, timeout=3.0)
        await self.until(lambda: client.link is not None)
        self.assertEqual(self.nodes[0].process.wait(10), 0)  # type: ignore[union-attr]

        self.assertEqual(await asker.ask(b"2"), b"standby:2")
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(asker.answers, [b"primary:1", b"standby:2"], "nothing resent")
        self.assertEqual((len(asker.moves), client.failovers), (1, 1))
        [(_, gap)] = client.gaps
        self.assertLess(gap, 0.05, "the move happened before the write")
        # The subscription lives on at the new active.
        await self.until(lambda: subscription.confirmed)
