"""
A hung active on one host, with real `srp serve` processes: three nodes
share one loopback address, the active is stopped (SIGSTOP) under client
load, a passive answers again within 1.5 s, and after SIGCONT exactly one
node is active (`srp status --json` of each node) and the answers agree.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srp.testing.load import Exchange, RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress
from srp.wire import InstanceRequest, InstancesResponse, decodeResponse
from tests.conftest import BIN
from tests.test_cluster_processes import clusterConfig

SIZE = 3
TRIALS = 10
#: The longest a stopped active may leave the cluster unanswered.
TAKEOVER = 1.5
#: Seconds the active stays stopped: past the takeover.
STOPPED_FOR = 1.55


def statusOf(*hosts: tuple[str, int]) -> list[dict[str, Any]]:
    """`srp status --json` of each node at (host, port), asked at once."""
    runs = [subprocess.Popen([str(BIN / "srp"), "status", "--cluster", "proc", "--json",
                              "--timeout", "3", "--port", str(port), host],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd="/", stdin=subprocess.DEVNULL) for host, port in hosts]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err
        results.append(json.loads(out))
    return results


class Statuses:
    """`srp status --json` of every node: the cluster address and each member socket seen."""

    def __init__(self, address: str) -> None:
        self.address = address
        #: The nodes' own cluster sockets, learnt from the passive lists.
        self.members: set[tuple[str, int]] = set()

    def everyNode(self) -> list[dict[str, Any]] | None:
        """The status of each node, asked all at once, or None if one is missing."""
        # Each node answers on its own socket too; the cluster address finds
        # the active until every node's socket is known.
        asked = sorted(self.members)
        found = statusOf(*asked if len(asked) == SIZE else [(self.address, 1434), *asked])
        for passive in (p for s in found for p in s["passives"]):
            host, port = passive["address"].rsplit(":", 1)
            self.members.add((host, int(port)))
        byNode = {s["node"]: s for s in found}
        return list(byNode.values()) if len(byNode) == SIZE else None

    def settled(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every node's status once one is active and the others passive."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.everyNode()
            if nodes is not None and sorted(n["role"] for n in nodes) == [
                    "active"] + ["passive"] * (SIZE - 1):
                return nodes
            assert time.monotonic() < deadline, f"not settled: {nodes}"
            time.sleep(0.1)


def tcpOf(exchange: Exchange) -> int | None:
    if exchange.reply is None:
        return None
    response = decodeResponse(exchange.reply)
    assert isinstance(response, InstancesResponse)
    return response.instances[0].tcp


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[NodeProcess]]]:
    address = freeLoopbackAddress()
    nodes: list[NodeProcess] = []
    try:
        for index in range(SIZE):
            nodes.append(NodeProcess(clusterConfig(tmp_path, address, index),
                                     tmp_path / f"node{index}.log").start())
        Statuses(address).settled()
        yield address, nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                os.kill(node.pid, signal.SIGCONT)
            node.stop()


def test_a_stopped_active_is_fenced_and_steps_down_when_continued(
        cluster: tuple[str, list[NodeProcess]]) -> None:
    address, nodes = cluster
    started = time.monotonic()
    nodeStatuses = Statuses(address)
    statuses = nodeStatuses.settled()
    for trial in range(TRIALS):
        [active] = [s for s in statuses if s["role"] == "active"]
        [victim] = [n for n in nodes if f"srp node {active['node']} started" in n.log()]
        stoppedAt: list[float] = []
        continuedAt: list[float] = []

        def stop(victim: NodeProcess = victim, at: list[float] = stoppedAt) -> None:
            os.kill(victim.pid, signal.SIGSTOP)
            at.append(time.monotonic())

        def cont(victim: NodeProcess = victim, at: list[float] = continuedAt) -> None:
            os.kill(victim.pid, signal.SIGCONT)
            at.append(time.monotonic())

        stream = RequestStream((address, 1434), InstanceRequest("SALES").encode(), rate=100,
                               timeout=0.05)
        exchanges = stream.run(0.3 + STOPPED_FOR + 0.6,
                               at=[(0.3, stop), (0.3 + STOPPED_FOR, cont)])
        after = [e for e in exchanges if e.sentAt > stoppedAt[0] and e.answeredAt is not None]
        assert after, f"trial {trial}: nobody took over"
        gap = after[0].answeredAt - stoppedAt[0]  # type: ignore[operator]
        assert gap < TAKEOVER, f"trial {trial}: answered again after {gap:.3f} s"
        # After SIGCONT the answers change at most once (the old active's
        # registrations come back when it joins): two nodes answering with
        # different data would alternate.
        answers = [tcpOf(e) for e in exchanges
                   if e.sentAt > continuedAt[0] and e.answeredAt is not None]
        changes = sum(a != b for a, b in itertools.pairwise(answers))
        assert changes <= 1, f"trial {trial}: answers after SIGCONT {answers}"
        statuses = nodeStatuses.settled()
        assert [s["role"] for s in statuses].count("active") == 1
        assert {s["epoch"] for s in statuses} == {max(s["epoch"] for s in statuses)}
        assert victim.process is not None and victim.process.poll() is None
        final = RequestStream((address, 1434), InstanceRequest("SALES").encode(), rate=50,
                              timeout=0.2).run(0.2)
        assert {tcpOf(e) for e in final} == {50000}
    print(f"{TRIALS} trials in {time.monotonic() - started:.1f} s")
