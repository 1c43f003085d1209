"""
Clusters of real `srp serve` processes sharing one loopback address: kill -9
of the active under client load, graceful stop of the active under load,
and a passive's crash.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from srp.testing.load import RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest, InstancesResponse, decodeResponse
from tests.conftest import srp

SIZE = 3


def clusterConfig(directory: Path, address: str, index: int) -> Path:
    # No server listens on these ports: health checks are off, these tests are about roles.
    return writeNodeConfig(directory / f"node{index}.toml", [address], [
        {"name": "SALES", "tcp": 50000 + index, "priority": index, "check": "none"},
        {"name": f"N{index}", "tcp": 60000 + index, "check": "none"},
    ], serverName=f"H{index}", tables={"cluster": {"name": "proc"}})


def waitFor(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[NodeProcess]]]:
    address = freeLoopbackAddress()
    nodes = []
    try:
        for index in range(SIZE):
            nodes.append(NodeProcess(clusterConfig(tmp_path, address, index),
                                     tmp_path / f"node{index}.log").start())
        waitFor(lambda: sum("Passive in cluster" in n.log() for n in nodes) == SIZE - 1)
        yield address, nodes
    finally:
        for node in nodes:
            node.stop()


def active(nodes: list[NodeProcess]) -> NodeProcess:
    [found] = [n for n in nodes if n.log().count("Active for cluster") >
               n.log().count("Stepping down") and n.process and n.process.poll() is None]
    return found


def tcpOf(reply: bytes | None) -> int | None:
    if reply is None:
        return None
    response = decodeResponse(reply)
    assert isinstance(response, InstancesResponse)
    return response.instances[0].tcp


def test_kill_9_of_the_active_is_taken_over_within_1_5_s(
        cluster: tuple[str, list[NodeProcess]]) -> None:
    address, nodes = cluster
    victim = active(nodes)
    killedAt: list[float] = []

    def kill() -> None:
        os.kill(victim.pid, signal.SIGKILL)
        killedAt.append(time.monotonic())

    stream = RequestStream((address, 1434), InstanceRequest("SALES").encode(), rate=100,
                           timeout=0.1)
    exchanges = stream.run(4.0, at=[(1.0, kill)])
    before = [e for e in exchanges if e.sentAt < killedAt[0] - 0.1]
    assert before and all(e.answeredAt is not None for e in before)
    after = [e for e in exchanges if e.sentAt > killedAt[0] and e.answeredAt is not None]
    assert after, "nobody took over"
    gap = after[0].answeredAt - killedAt[0]  # type: ignore[operator]
    assert gap < 1.5
    survivors = [n for n in nodes if n is not victim]
    assert tcpOf(after[-1].reply) == min(50000 + nodes.index(n) for n in survivors)
    assert all(e.answeredAt is not None for e in exchanges if e.sentAt > killedAt[0] + 1.5)


def test_graceful_stop_of_the_active_under_load_loses_nothing(
        cluster: tuple[str, list[NodeProcess]]) -> None:
    address, nodes = cluster
    leaving = active(nodes)
    stream = RequestStream((address, 1434), InstanceRequest("SALES").encode(), rate=1000,
                           timeout=0.25)
    exchanges = stream.run(3.0, at=[(1.0, lambda: os.kill(leaving.pid, signal.SIGTERM))])
    assert len(exchanges) > 2500
    lost = [e for e in exchanges if e.answeredAt is None]
    assert lost == []
    assert leaving.process is not None and leaving.process.wait(10) == 0
    status = json.loads(srp("status", "--cluster", "proc", "--json", address).stdout)
    assert status["role"] == "active"
    assert status["counters"]["sockets_taken"] == 1, "the port was handed over, not re-bound"
    remaining = [50000 + i for i, n in enumerate(nodes) if n is not leaving]
    ports = [tcpOf(e.reply) for e in exchanges]
    assert ports[0] == 50000 + nodes.index(leaving)
    assert ports[-1] == min(remaining)


def test_passive_crash_expires_its_instances(cluster: tuple[str, list[NodeProcess]]) -> None:
    address, nodes = cluster
    keeper = active(nodes)
    passive = next(n for n in nodes if n is not keeper)
    index = nodes.index(passive)
    probe = RequestStream((address, 1434), InstanceRequest(f"N{index}").encode(), rate=20,
                          timeout=0.2)
    assert all(e.answeredAt for e in probe.run(0.3))
    os.kill(passive.pid, signal.SIGKILL)
    time.sleep(2.0)
    assert not any(e.answeredAt for e in RequestStream(
        (address, 1434), InstanceRequest(f"N{index}").encode(), rate=20,
        timeout=0.2).run(0.5))


def test_role_commands_follow_the_roles(tmp_path: Path) -> None:
    address = freeLoopbackAddress()
    record = tmp_path / "roles.txt"
    nodes = []
    try:
        for index in range(2):
            command = f"echo {index} $SRP_ROLE $SRP_EPOCH >> {record}"
            path = writeNodeConfig(tmp_path / f"node{index}.toml", [address],
                                   [{"name": f"N{index}", "tcp": 60000 + index}],
                                   tables={"cluster": {"name": "roles", "on_active": command,
                                                       "on_passive": command}})
            nodes.append(NodeProcess(path, tmp_path / f"node{index}.log").start())
            waitFor(lambda n=index: record.exists() and len(record.read_text().splitlines()) > n)
        assert record.read_text().splitlines() == ["0 active 1", "1 passive 1"]
        os.kill(nodes[0].pid, signal.SIGTERM)
        waitFor(lambda: len(record.read_text().splitlines()) >= 4)
        assert sorted(record.read_text().splitlines()[2:]) == ["0 stopped 1", "1 active 2"]
    finally:
        for node in nodes:
            node.stop()
