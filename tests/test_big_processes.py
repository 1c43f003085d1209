"""
Registrations beyond one datagram with real `srp serve` processes: a node
with 10,000 instances joins a cluster, and `srp status` lists a registry of
100,000.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from srp.authenticator import ClusterAuthenticator, randomNodeId
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest, InstancesResponse, decodeResponse
from srp.wire.cluster import StatusQuery, StatusReply, clusterId, decodeEnvelope
from tests.conftest import srp

CLUSTER = "big"


def instances(count: int, prefix: str = "I", priority: int = 0) -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{n}", "tcp": 10000 + n % 50000, "priority": priority,
             "check": "none"} for n in range(count)]


def waitFor(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def ask(address: str, request: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, (address, 1434))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def registrationsHeld(address: str) -> int:
    """How many registrations the active at C{address} holds (its first status page says)."""
    now = Clock()
    now.advance(time.time())
    auth = ClusterAuthenticator(now, clusterId(CLUSTER), randomNodeId())
    reply = ask(address, auth.seal(StatusQuery(), 0))
    if reply is None:
        return -1
    message = decodeEnvelope(reply, b"", clusterId(CLUSTER)).message
    assert isinstance(message, StatusReply)
    return int(json.loads(message.document)["registrations_total"])


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Makes nodes (not started yet), each stopped at the end of the test."""
    with ExitStack() as stack:
        made = 0

        def node(address: str, registered: list[dict[str, Any]],
                 limits: dict[str, Any] | None = None) -> NodeProcess:
            nonlocal made
            made += 1
            config = writeNodeConfig(
                tmp_path / f"node{made}.toml", [address], registered,
                tables={"cluster": {"name": CLUSTER}} | ({"limits": limits} if limits else {}))
            process = NodeProcess(config, tmp_path / f"node{made}.log")
            stack.callback(process.stop)
            return process

        yield node


def test_a_node_with_10000_instances_joins_and_its_last_is_answered(
        nodes: Callable[..., NodeProcess]) -> None:
    address = freeLoopbackAddress()
    active = nodes(address, instances(1, "ACTIVE")).start()
    waitFor(lambda: "Active for cluster" in active.log(), 5, "the active")
    passive = nodes(address, instances(10_000)).start(timeout=30)
    started = time.monotonic()
    request = InstanceRequest("I9999").encode()
    waitFor(lambda: ask(address, request, 0.2) is not None, 15, "I9999 to be answered")
    joined = time.monotonic() - started
    reply = ask(address, request)
    assert reply is not None
    response = decodeResponse(reply)
    assert isinstance(response, InstancesResponse)
    [info] = response.instances
    assert (info.instanceName, info.tcp) == ("I9999", 10000 + 9999)
    assert registrationsHeld(address) == 10_001
    assert "Passive in cluster" in passive.log() and "exceeds" not in passive.log()
    assert joined < 5, f"joined in {joined:.1f} s"


def test_status_lists_100000_registrations(nodes: Callable[..., NodeProcess]) -> None:
    address = freeLoopbackAddress()
    active = nodes(address, [], limits={"max_registrations_per_node": 25_000}).start()
    waitFor(lambda: "Active for cluster" in active.log(), 5, "the active")
    # Four passives: two instance sets of 25,000, each with a primary and a standby.
    passives = [nodes(address, instances(25_000, prefix, priority))
                for prefix in ("I", "J") for priority in (0, 1)]
    with ThreadPoolExecutor(len(passives)) as starting:
        list(starting.map(lambda node: node.start(timeout=60), passives))
    waitFor(lambda: registrationsHeld(address) == 100_000, 60, "100,000 registrations")
    result = srp("status", "--json", "--cluster", CLUSTER, address, timeout=60)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert set(status) == {"node", "version", "started", "uptime", "cluster", "role",
                           "epoch", "active", "passives", "registrations", "counters"}
    assert status["role"] == "active" and len(status["passives"]) == 4
    registrations = status["registrations"]
    assert len(registrations) == 100_000
    assert len({(r["instance"], r["node"]) for r in registrations}) == 100_000
    assert {r["instance"] for r in registrations} == {
        f"{prefix}{n}" for prefix in "IJ" for n in range(25_000)}
