"""
Real C{srp serve} processes on three loopback addresses (three "hosts") of a
cluster not named C{srp}: C{srp resolve} and C{srp status} need no cluster
name, and report the host where each instance lives; a plain client asking
the active is told a relay's port that reaches the instance.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import reactor

from srp.client.endpoint import SRPClientParser
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire.cluster import ANY_CLUSTER
from tests.conftest import srp
from tests.test_health_clients import waitUntil


def addresses(count: int) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        last = int(found[-1].rsplit(".", 1)[1]) if found else 1
        found.append(freeLoopbackAddress(first=last + 1))
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[socket.socket]]]:
    hosts = addresses(3)
    servers = [socket.create_server((host, 0)) for host in hosts]
    nodes: list[NodeProcess] = []
    try:
        for index, host in enumerate(hosts):
            config = writeNodeConfig(tmp_path / f"node{index}.toml", [host], [
                {"name": f"N{index}", "tcp": servers[index].getsockname()[1]}],
                tables={"cluster": {"name": "elsewhere", "addresses": hosts}})
            nodes.append(NodeProcess(config, tmp_path / f"node{index}.log").start())
            if index == 0:
                waitUntil(lambda: "Active for cluster" in nodes[0].log(), 10)
        waitUntil(lambda: nodes[0].log().count("Relaying") == 2, 10)
        yield hosts, servers
    finally:
        for node in nodes:
            node.stop()
        for server in servers:
            server.close()


def test_resolve_without_the_cluster_name_reports_each_host(
        cluster: tuple[list[str], list[socket.socket]]) -> None:
    hosts, servers = cluster
    for index, host in enumerate(hosts):
        result = srp("resolve", "--json", f"{hosts[0]}\\N{index}")
        assert result.returncode == 0, result.stderr
        [place] = json.loads(result.stdout)
        assert (place["host"], place["tcp"]) == (host, servers[index].getsockname()[1])
        assert place["node"] is not None  # srp's extended resolve answered


def test_status_without_the_cluster_name(cluster: tuple[list[str], list[socket.socket]]) -> None:
    hosts, _ = cluster
    result = srp("status", "--json", hosts[0])
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["cluster"], status["role"]) == ("elsewhere", "active")


def test_the_plain_answer_at_the_active_reaches_another_hosts_instance(
        cluster: tuple[list[str], list[socket.socket]]) -> None:
    hosts, servers = cluster
    result = srp("enumerate", "--json", hosts[0])
    assert result.returncode == 0, result.stderr
    ports = {i["instance"]: i["tcp"] for i in json.loads(result.stdout)}
    assert ports["N0"] == servers[0].getsockname()[1]
    for index in (1, 2):
        assert ports[f"N{index}"] != servers[index].getsockname()[1]
        with socket.create_connection((hosts[0], ports[f"N{index}"]), timeout=2):
            accepted, _ = servers[index].accept()
            accepted.close()


def test_the_srp_endpoint_needs_no_cluster_name() -> None:
    endpoint = SRPClientParser().parseStreamClient(reactor, "db1/SALES")
    assert endpoint.resolver.auth.cluster == ANY_CLUSTER  # type: ignore[attr-defined]
