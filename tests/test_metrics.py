"""
A node's Prometheus metrics, collected from nodes on a fake network (no
processes, no sockets): requests by kind and outcome, roles through a
takeover, health, relays; the HTTP resource; the configuration of the
metrics port, of node ids and of the state file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from attrs import evolve
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from twisted.internet.testing import MemoryReactorClock
from twisted.web.test.requesthelper import DummyRequest

from srp.authenticator import ClusterAuthenticator
from srp.server.config import ClusterConfig, ConfigError, parseConfig
from srp.server.metrics import (
    MAX_INSTANCE_SERIES,
    MetricsResource,
    nodeRegistry,
    requestKind,
)
from srp.server.node import NodeService, NodeStartError
from srp.server.responder import ResolutionResponder, instanceReply
from srp.testing import FakeNetwork
from srp.testing.processes import writeNodeConfig
from srp.wire import EnumerateRequest, InstanceRequest
from srp.wire.cluster import ANY_CLUSTER, Subscribe
from tests.conftest import srp


def document(*instances: dict[str, Any], **tables: dict[str, Any]) -> dict[str, Any]:
    return {"node": {"listen": ["127.0.0.1"]},
            "instances": [{"check": "none"} | i for i in instances], **tables}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class Standalone:
    """A standalone node on a fake network, and its metrics."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.network = FakeNetwork()
        self.node = NodeService(parseConfig(doc), self.network.reactor("127.0.0.1"))
        self.node.startService()
        self.metrics = nodeRegistry(self.node)

    def send(self, datagram: bytes, count: int = 1) -> None:
        [responder] = self.node.membership.current.ports.responders  # type: ignore[attr-defined]
        assert isinstance(responder, ResolutionResponder)
        for _ in range(count):
            responder.datagramReceived(datagram, ("192.0.2.7", 50000))


def test_requests_are_counted_by_kind_and_outcome() -> None:
    standalone = Standalone(document({"name": "SALES", "tcp": 1433, "dac_port": 1434},
                                     {"name": "HIDDEN", "tcp": 1435, "hidden": True}))
    standalone.send(InstanceRequest("SALES").encode(), 7)
    standalone.send(InstanceRequest("NOPE").encode(), 3)
    standalone.send(InstanceRequest("HIDDEN").encode(), 2)
    standalone.send(b"\x0f\x01SALES", 1)
    standalone.send(b"\x03", 4)
    standalone.send(b"\x99garbage", 5)
    standalone.send(b"", 1)
    standalone.send(b"\x04", 2)  # an instance request without a name
    metrics = standalone.metrics

    def requests(kind: str, outcome: str) -> float | None:
        return sample(metrics, "srp_requests_total", kind=kind, outcome=outcome)

    assert requests("instance", "answered") == 7
    assert requests("instance", "unknown") == 5
    assert requests("instance", "malformed") == 2
    assert requests("dac", "answered") == 1
    assert requests("enumerate", "answered") == 4
    assert requests("other", "malformed") == 6
    assert requests("instance", "limited") is None
    sales = standalone.node.registry.lookup("SALES")
    assert sales is not None
    [responder] = standalone.node.membership.current.ports.responders  # type: ignore[attr-defined]
    enumeration = responder.replyTo(EnumerateRequest())
    assert sample(metrics, "srp_reply_bytes_total") == (
        7 * len(instanceReply(sales.info)) + 4 * len(enumeration) + 6)
    assert standalone.node.stats.answered == 12


def test_the_kind_of_every_request_type() -> None:
    assert [requestKind(t) for t in (0x02, 0x03, 0x04, 0x0F, 0xA3, 0x00, 0x0A)] == [
        "broadcast", "enumerate", "instance", "dac", "cluster", "other", "other"]


def test_identity_role_epoch_and_start_time() -> None:
    standalone = Standalone(document({"name": "SALES", "tcp": 1433}))
    standalone.network.clock.advance(5)
    metrics = standalone.metrics
    node = standalone.node
    assert sample(metrics, "srp_info", version="0.1.0", node=f"{node.membership.nodeId:016x}",
                  cluster="srp") == 1
    assert sample(metrics, "srp_role", role="standalone") == 1
    assert sample(metrics, "srp_role", role="active") == 0
    assert sample(metrics, "srp_role", role="passive") == 0
    assert sample(metrics, "srp_epoch") == 1
    assert sample(metrics, "srp_start_time_seconds") == 0.0
    standalone.network.clock.advance(0.9)
    status = node.membership.status()
    assert (status["version"], status["started"], status["uptime"]) == ("0.1.0", 0.0, 5)


class Pair:
    """Two nodes of one cluster on one fake host: the first active, the second passive."""

    def __init__(self) -> None:
        self.network = FakeNetwork()
        cluster = ClusterConfig(name="metrics", addresses=("127.0.0.1",))
        self.nodes = []
        for n, name in enumerate(("ONE", "TWO")):
            node = NodeService(evolve(parseConfig(document({"name": name, "tcp": 1000 + n})),
                                      cluster=cluster),
                               self.network.reactor("127.0.0.1"), nodeId=n + 1)
            node.startService()
            self.nodes.append(node)
            self.run(1.0)
        self.metrics = [nodeRegistry(node) for node in self.nodes]
        assert [n.role for n in self.nodes] == ["active", "passive"]

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.01)):
            self.network.clock.advance(0.01)


def test_a_takeover_changes_the_survivors_role_and_counts_once() -> None:
    pair = Pair()
    first, second = pair.metrics
    assert sample(first, "srp_passives") == 1
    assert sample(first, "srp_registrations", state="up") == 2
    assert sample(second, "srp_role", role="passive") == 1
    assert sample(second, "srp_takeovers_total") == 0
    pair.nodes[0].membership.halt()
    pair.run(2.0)
    assert sample(second, "srp_role", role="active") == 1
    assert sample(second, "srp_role", role="passive") == 0
    assert sample(second, "srp_takeovers_total") == 1
    assert sample(second, "srp_active_lost_total") == 1
    assert sample(second, "srp_activations_total") == 1
    assert sample(second, "srp_handovers_total", direction="taken") == 0
    assert sample(second, "srp_epoch") == 2
    assert sample(first, "srp_role", role="crashed") == 1


def test_a_graceful_stop_counts_a_hand_over_on_both_sides() -> None:
    pair = Pair()
    first, second = pair.metrics
    pair.nodes[0].stopService()
    pair.run(2.0)
    assert sample(first, "srp_handovers_total", direction="given") == 1
    assert sample(second, "srp_handovers_total", direction="taken") == 1
    assert sample(second, "srp_takeovers_total") == 0
    assert sample(second, "srp_role", role="active") == 1


def test_instance_health_and_registrations_by_state() -> None:
    standalone = Standalone(document({"name": "SALES", "tcp": 1433},
                                     {"name": "REPORTS", "tcp": 1434}))
    membership = standalone.node.membership
    membership.updateOwn([evolve(r, down=r.name == "SALES") for r in membership.own])
    metrics = standalone.metrics
    assert sample(metrics, "srp_instance_up", instance="SALES") == 0
    assert sample(metrics, "srp_instance_up", instance="REPORTS") == 1
    assert sample(metrics, "srp_registrations", state="down") == 1
    assert sample(metrics, "srp_registrations", state="up") == 1
    assert sample(metrics, "srp_own_instances", state="down") == 1


def test_per_instance_series_stop_at_the_bound() -> None:
    many = Standalone(document(*({"name": f"I{n}", "tcp": 2000 + n}
                                 for n in range(MAX_INSTANCE_SERIES + 1))))
    membership = many.node.membership
    membership.updateOwn([evolve(r, down=r.name == "I7") for r in membership.own])
    samples = [s for f in many.metrics.collect() for s in f.samples]
    assert not [s for s in samples if s.name == "srp_instance_up"]
    assert sample(many.metrics, "srp_own_instances", state="down") == 1
    assert sample(many.metrics, "srp_own_instances", state="up") == MAX_INSTANCE_SERIES
    bounded = Standalone(document(*({"name": f"I{n}", "tcp": 2000 + n}
                                    for n in range(MAX_INSTANCE_SERIES))))
    assert len([s for f in bounded.metrics.collect() for s in f.samples
                if s.name == "srp_instance_up"]) == MAX_INSTANCE_SERIES


def test_health_checks_run_and_failed_are_counted() -> None:
    standalone = Standalone(document({"name": "SALES", "tcp": 1433}))
    standalone.node.membership.counters.update(health_checks=9, health_failures=4)
    assert sample(standalone.metrics, "srp_health_checks_total") == 9
    assert sample(standalone.metrics, "srp_health_check_failures_total") == 4


def test_relay_connections_and_bytes() -> None:
    node = NodeService(parseConfig(document({"name": "SALES", "relay": "192.0.2.9:1433",
                                             "serve": ["tcp"]})), MemoryReactorClock())
    stats = node.relayStats()["SALES"]
    stats.accepted, stats.open, stats.failed, stats.overflowed = 5, 2, 1, 1
    stats.bytesUp, stats.bytesDown = 300, 4000
    metrics = nodeRegistry(node)
    assert sample(metrics, "srp_relay_connections_total", instance="SALES") == 5
    assert sample(metrics, "srp_relay_open_connections", instance="SALES") == 2
    assert sample(metrics, "srp_relay_failures_total", instance="SALES",
                  reason="unreachable") == 1
    assert sample(metrics, "srp_relay_bytes_total", instance="SALES",
                  direction="to_client") == 4000


def test_limited_and_denied_requests_and_bounds() -> None:
    standalone = Standalone(document(
        {"name": "SALES", "tcp": 1433},
        limits={"reply_rate_per_source": 1, "reply_burst_per_source": 1500},
        access={"clients_deny": ["198.51.100.0/24"]}))
    [responder] = standalone.node.membership.current.ports.responders  # type: ignore[attr-defined]
    request = InstanceRequest("SALES").encode()
    for _ in range(40):
        responder.datagramReceived(request, ("192.0.2.7", 50000))
    responder.datagramReceived(request, ("198.51.100.1", 50000))
    standalone.node.membership.counters["instances_refused"] += 3
    metrics = standalone.metrics
    answered = sample(metrics, "srp_requests_total", kind="instance", outcome="answered")
    assert answered is not None and 0 < answered < 40
    assert sample(metrics, "srp_requests_total", kind="instance",
                  outcome="limited") == 40 - answered
    assert sample(metrics, "srp_requests_total", kind="instance", outcome="denied") == 1
    assert sample(metrics, "srp_state_bounds_refused_total", bound="max_instances") == 3


def test_other_cluster_counters_are_events() -> None:
    pair = Pair()
    probes = pair.nodes[1].membership.counters["probes"]
    assert probes > 0
    assert sample(pair.metrics[1], "srp_cluster_events_total", event="probes") == probes


def test_the_resource_serves_the_text_format() -> None:
    standalone = Standalone(document({"name": "SALES", "tcp": 1433}))
    standalone.send(InstanceRequest("SALES").encode(), 3)
    request = DummyRequest([b""])
    body = MetricsResource(standalone.metrics).render_GET(request)  # type: ignore[arg-type]
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; version=0.0.4; charset=utf-8"]
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    [answered] = [s for s in families["srp_requests"].samples
                  if s.labels == {"kind": "instance", "outcome": "answered"}]
    assert answered.value == 3
    assert "process_cpu_seconds" in families
    for family in families.values():
        assert family.name.startswith(("srp_", "process_"))


# The configuration


def test_metrics_listen_is_parsed() -> None:
    config = parseConfig(document(metrics={"listen": "127.0.0.1:9434"}))
    assert config.metrics == ("127.0.0.1", 9434)
    assert parseConfig(document(metrics={"listen": "[::1]:9434"})).metrics == ("::1", 9434)
    assert parseConfig(document()).metrics is None


@pytest.mark.parametrize(("table", "message"), [
    ({"listen": "127.0.0.1"}, "[metrics]: listen '127.0.0.1' is not \"HOST:PORT\""),
    ({"listen": "localhost:9434"}, "listen address 'localhost' is not an IPv4"),
    ({"listen": "127.0.0.1:0"}, "is not \"HOST:PORT\""),
    ({}, "[metrics]: listen is required"),
    ({"listen": "127.0.0.1:9434", "port": 1}, "unknown key 'port'"),
])
def test_bad_metrics_tables_are_one_clear_error(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parseConfig(document(metrics=table))
    assert message in str(raised.value)


def test_node_id_is_fixed_by_the_configuration() -> None:
    doc = document()
    doc["node"]["node_id"] = "00000000000000aB"
    node = NodeService(parseConfig(doc), FakeNetwork().reactor("127.0.0.1"))
    assert node.membership.nodeId == 0xAB
    for bad in ("12345", "0x00000000000001", "zzzzzzzzzzzzzzzz", 7):
        doc["node"]["node_id"] = bad
        with pytest.raises(ConfigError, match="node_id"):
            parseConfig(doc)


def test_the_node_id_persists_in_the_state_file(tmp_path: Path) -> None:
    doc = document()
    doc["node"]["state_file"] = str(tmp_path / "node.state")
    config = parseConfig(doc)
    first = NodeService(config, FakeNetwork().reactor("127.0.0.1")).membership.nodeId
    assert (tmp_path / "node.state").read_text() == f"{first:016x}\n"
    again = NodeService(config, FakeNetwork().reactor("127.0.0.1")).membership.nodeId
    assert again == first
    doc["node"]["node_id"] = "0000000000000001"
    fixed = NodeService(parseConfig(doc), FakeNetwork().reactor("127.0.0.1"))
    assert fixed.membership.nodeId == 1, "node_id wins over the state file"


@pytest.mark.parametrize(("content", "message"), [
    ("not an id\n", "holds no node id (16 hex digits); remove it"),
    ("", "holds no node id"),
    (None, "cannot read the node's state file: Is a directory"),
])
def test_a_bad_state_file_is_one_clear_error(tmp_path: Path, content: str | None,
                                            message: str) -> None:
    path = tmp_path / "node.state"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    doc = document()
    doc["node"]["state_file"] = str(path)
    with pytest.raises(NodeStartError) as raised:
        NodeService(parseConfig(doc), FakeNetwork().reactor("127.0.0.1"))
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_an_unwritable_state_directory_is_one_clear_error(tmp_path: Path) -> None:
    doc = document()
    doc["node"]["state_file"] = str(tmp_path / "missing" / "node.state")
    with pytest.raises(NodeStartError, match="cannot write the node's state file: No such"):
        NodeService(parseConfig(doc), FakeNetwork().reactor("127.0.0.1"))


def test_serve_refuses_a_bad_metrics_address(tmp_path: Path) -> None:
    config = writeNodeConfig(tmp_path / "node.toml", ["127.0.0.1"], [])
    result = srp("serve", "--config", str(config), "--metrics", "localhost")
    assert result.returncode == 1
    assert result.stderr == "srp: --metrics: address 'localhost' is not \"HOST:PORT\"\n"


def test_refused_subscriptions_are_a_bound() -> None:
    """A standalone node takes subscriptions up to max_subscriptions, and counts the rest."""
    standalone = Standalone(document({"name": "SALES", "tcp": 1433},
                                     limits={"max_subscriptions": 1}))
    [responder] = standalone.node.membership.current.ports.responders  # type: ignore[attr-defined]
    client = ClusterAuthenticator(standalone.network.clock, ANY_CLUSTER, 7)
    for port in (50000, 50001):
        responder.datagramReceived(client.seal(Subscribe("SALES", 10_000), 0),
                                   ("127.0.0.5", port))
    counters = standalone.node.membership.counters
    assert (counters["subscriptions"], counters["subscriptions_refused"]) == (1, 1)
    assert sample(standalone.metrics, "srp_state_bounds_refused_total",
                  bound="max_subscriptions") == 1
