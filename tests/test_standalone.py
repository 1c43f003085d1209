"""
A node without [cluster] is standalone: its port and nothing else, no
cluster wording, no node registers with it; idle configurations warn once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent

from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.health import HealthSettings
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from tests.test_mismatch import run


@pytest.fixture
def logged() -> Iterator[Sequence[LogEvent]]:
    with capturedLogs() as events:
        yield events


def start(network: FakeNetwork, host: str, instances: Sequence[Registration],
          cluster: ClusterConfig | None = None) -> NodeService:
    # No server listens: checks are off, these tests are about the node itself.
    config = NodeConfig(listen=(host,), port=1434, instances=tuple(instances),
                        cluster=cluster,
                        health={r.key: HealthSettings(check="none") for r in instances})
    node = NodeService(config, network.reactor(host), nodeId=7)
    node.startService()
    return node


def warnings(events: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]


SALES = Registration(InstanceInfo("H", "SALES", tcp=1433))


def test_a_standalone_node_holds_its_port_only(logged: Sequence[LogEvent]) -> None:
    network = FakeNetwork(seed=1)
    node = start(network, "127.0.0.1", [SALES])
    run(network, 2.0)
    ports = [p.getHost().port for p in network.portsOf(node.reactor)]
    assert ports == [1434], "no socket of its own for cluster messages"
    assert network.offers == {}, "nothing offered to other processes of the host"
    assert node.role == "standalone" and node.membership.status()["role"] == "standalone"
    text = "\n".join(formatEvent(e) for e in logged)
    assert "Active for cluster" not in text and "passives" not in text
    assert "started (standalone)" in text
    assert warnings(logged) == []
    done = node.stopService()
    run(network, 1.0)
    assert done.called and list(network.portsOf(node.reactor)) == []


def test_a_clustered_node_cannot_join_a_standalone_one() -> None:
    network = FakeNetwork(seed=2)
    standalone = start(network, "127.0.0.1", [SALES])
    clustered = NodeService(
        NodeConfig(listen=("127.0.0.2",), port=1434,
                   instances=(Registration(InstanceInfo("H2", "OTHER", tcp=1434)),),
                   cluster=ClusterConfig(addresses=("127.0.0.1", "127.0.0.2"))),
        network.reactor("127.0.0.2"), nodeId=8)
    clustered.startService()
    run(network, 3.0)
    assert clustered.role == "active", "it found no active to follow"
    assert standalone.membership.current.passives == []
    assert [r.name for r in standalone.registry.registrations()] == ["SALES"]
    assert standalone.membership.counters["ignored_cluster"] > 0


def test_a_node_with_no_instances_warns_once(logged: Sequence[LogEvent]) -> None:
    network = FakeNetwork(seed=3)
    start(network, "127.0.0.1", [])
    run(network, 2.0)
    assert warnings(logged) == [
        "This node has no [[instances]]: it registers nothing and answers no request for "
        "an instance"]


def test_a_clustered_node_with_no_instances_warns_once(logged: Sequence[LogEvent]) -> None:
    network = FakeNetwork(seed=4)
    start(network, "127.0.0.1", [], ClusterConfig(name="empty"))
    run(network, 2.0)
    assert [w for w in warnings(logged) if "instances" in w] == [
        "This node has no [[instances]]: it registers nothing"]


def test_an_instance_with_no_transport_warns_once(logged: Sequence[LogEvent]) -> None:
    network = FakeNetwork(seed=5)
    start(network, "127.0.0.1", [SALES, Registration(InstanceInfo("H", "BARE")),
                                 Registration(InstanceInfo("H", "NAMEONLY"))])
    run(network, 2.0)
    assert warnings(logged) == [
        f"Instance {name} has no tcp, np or via: clients are told its name but no way to "
        "reach it" for name in ("BARE", "NAMEONLY")]
