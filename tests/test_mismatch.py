"""
A misconfigured cluster is loud: nodes with different keys (or cluster
names) log one rate-limited line naming the sender, and a node that cannot
bind the cluster port says an srp node with another key or name holds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogEvent, capturedLogs, formatEvent

from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.mismatch import REPORT_EVERY
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from tests.cluster_sim import INTERVAL, KEY, MISSES

OTHER_KEY = b"fedcba9876543210fedcba9876543210"


@pytest.fixture
def logged() -> Iterator[Sequence[LogEvent]]:
    with capturedLogs() as events:
        yield events


def node(network: FakeNetwork, index: int, host: str, addresses: tuple[str, ...],
         key: bytes = KEY, name: str = "mis") -> NodeService:
    config = NodeConfig(
        listen=(host,), port=1434,
        instances=(Registration(InstanceInfo(f"H{index}", f"N{index}", tcp=1000 + index)),),
        cluster=ClusterConfig(name=name, addresses=addresses, interval=INTERVAL,
                              misses=MISSES, key=key),
    )
    service = NodeService(config, network.reactor(host), nodeId=index + 1)
    service.startService()
    return service


def run(network: FakeNetwork, seconds: float) -> None:
    end = network.clock.seconds() + seconds
    while network.clock.seconds() < end:
        network.clock.advance(0.05)


def lines(events: Sequence[LogEvent], text: str) -> list[str]:
    return [formatEvent(e) for e in events if text in formatEvent(e)]


def test_a_wrong_key_is_logged_naming_the_sender_at_most_once_a_period(
        logged: list[Any]) -> None:
    network = FakeNetwork(seed=3)
    hosts = ("10.0.0.1", "10.0.0.2")
    first = node(network, 0, hosts[0], hosts)
    second = node(network, 1, hosts[1], hosts, key=OTHER_KEY)
    run(network, 2 * REPORT_EVERY + 5.0)
    # Each stays active: neither hears the other.
    assert (first.role, second.role) == ("active", "active")
    warned = lines(logged, "wrong cluster key?")
    fromSecond = [line for line in warned if "from 10.0.0.2:" in line]
    fromFirst = [line for line in warned if "from 10.0.0.1:" in line]
    # One line at once, then one per period (the probes never stop).
    assert len(fromSecond) == 3
    assert len(fromFirst) == 3
    assert "authentication tag does not match the cluster key" in fromSecond[0]
    assert first.membership.auth.rejected["tag"] > 100
    status = first.membership.status()
    assert status["counters"]["rejected_tag"] == first.membership.auth.rejected["tag"]
    assert "rejected for this since the last such line" in fromSecond[1]


def test_another_cluster_name_is_logged_as_such(logged: list[Any]) -> None:
    network = FakeNetwork(seed=3)
    hosts = ("10.0.0.1", "10.0.0.2")
    node(network, 0, hosts[0], hosts)
    node(network, 1, hosts[1], hosts, name="other")
    run(network, 3.0)
    warned = lines(logged, "another cluster name?")
    assert [line for line in warned if "from 10.0.0.2:" in line]
    assert not lines(logged, "wrong cluster key?")


@pytest.mark.parametrize(("key", "name", "holder"), [
    (OTHER_KEY, "mis", "an srp node with another cluster key holds it"),
    (KEY, "other", "an srp node of another cluster name holds it"),
])
def test_a_refused_bind_names_the_srp_node_that_holds_the_port(
        logged: list[Any], key: bytes, name: str, holder: str) -> None:
    network = FakeNetwork(seed=3)
    host = ("127.0.0.1",)
    first = node(network, 0, host[0], host)
    run(network, 2.0)
    second = node(network, 1, host[0], host, key=key, name=name)
    run(network, 3.0)
    assert first.role == "active"
    assert second.role in ("probing", "binding")
    [line] = [line for line in lines(logged, "Cannot bind the cluster port")
              if "(1 times)" in line]
    assert f"{holder} (127.0.0.1:1434 answered)" in line
    assert first.membership.counters["foreign_probes_answered"] >= 1


def test_a_refused_bind_without_an_srp_node_blames_another_program(
        logged: list[Any]) -> None:
    network = FakeNetwork(seed=3)
    network.reactor("127.0.0.1").listenUDP(1434, DatagramProtocol())  # answers nothing
    node(network, 0, "127.0.0.1", ("127.0.0.1",))
    run(network, 2.0)
    [line] = lines(logged, "Cannot bind the cluster port")
    assert line.endswith("another program may hold it")

