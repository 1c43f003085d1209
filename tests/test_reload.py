"""
Reloading a node's configuration (SIGHUP): on a fake network, what each
kind of change does to the cluster's answers at once; then real `srp serve`
and `twistd -n srp` processes under a stream of requests, where a SIGHUP
never stops the node and no request goes unanswered.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve
from twisted.logger import LogLevel, capturedLogs

from srp.server.config import ClusterConfig, loadConfig, parseConfig
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from srp.testing.load import RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest
from tests.conftest import BIN, srp
from tests.test_cluster_processes import tcpOf


def instances(*tables: dict[str, Any]) -> list[dict[str, Any]]:
    """Instance tables with health checks off: no server runs behind them."""
    return [{"check": "none", **table} for table in tables]


def document(*tables: dict[str, Any]) -> dict[str, Any]:
    return {"node": {"listen": ["127.0.0.1"]}, "instances": instances(*tables)}


class Cluster:
    """Two nodes on one fake host: the first becomes active, the second passive."""

    def __init__(self, first: dict[str, Any], second: dict[str, Any]) -> None:
        self.network = FakeNetwork()
        cluster = ClusterConfig(name="reload", addresses=("127.0.0.1",))
        self.nodes = []
        for n, doc in enumerate((first, second)):
            service = NodeService(evolve(parseConfig(doc), cluster=cluster),
                                  self.network.reactor("127.0.0.1"), nodeId=n + 1)
            service.startService()
            self.nodes.append(service)
            self.run(1.0)
        assert [n.role for n in self.nodes] == ["active", "passive"]

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.01)):
            self.network.clock.advance(0.01)

    def answer(self, name: str) -> tuple[int | None, int] | None:
        """The tcp port and node the active answers C{name} with."""
        found = self.nodes[0].registry.lookup(name)
        return None if found is None else (found.info.tcp, found.nodeId)

    def reload(self, index: int, doc: dict[str, Any]) -> None:
        node = self.nodes[index]
        node.reload(evolve(parseConfig(doc), cluster=node.config.cluster))


def test_the_active_applies_its_own_reload_in_the_same_turn() -> None:
    nodes = Cluster(document({"name": "SALES", "tcp": 1001}),
                    document({"name": "OTHER", "tcp": 2001}))
    nodes.reload(0, document({"name": "SALES", "tcp": 1002}, {"name": "NEW", "tcp": 1003}))
    assert nodes.answer("SALES") == (1002, 1)
    assert nodes.answer("NEW") == (1003, 1)
    nodes.reload(0, document({"name": "NEW", "tcp": 1003}))
    assert nodes.answer("SALES") is None
    assert nodes.answer("OTHER") == (2001, 2)
    assert nodes.nodes[0].role == "active"
    assert nodes.nodes[0].membership.counters["reloads"] == 2


def test_a_passive_reload_reaches_the_active_within_a_round_trip() -> None:
    nodes = Cluster(document({"name": "SALES", "tcp": 1001, "priority": 1}),
                    document({"name": "OTHER", "tcp": 2001}))
    epoch = nodes.nodes[0].membership.epoch
    nodes.reload(1, document({"name": "SALES", "tcp": 2002, "priority": 0},
                             {"name": "OTHER", "tcp": 2003}))
    nodes.run(0.05)
    assert nodes.answer("SALES") == (2002, 2), "the better priority answers"
    assert nodes.answer("OTHER") == (2003, 2)
    nodes.reload(1, document({"name": "OTHER", "tcp": 2003}))
    nodes.run(0.05)
    assert nodes.answer("SALES") == (1001, 1)
    assert [n.role for n in nodes.nodes] == ["active", "passive"]
    assert nodes.nodes[0].membership.epoch == epoch, "no role changed"


def test_settings_that_need_a_restart_are_kept_and_said() -> None:
    nodes = Cluster(document({"name": "SALES", "tcp": 1001}),
                    document({"name": "OTHER", "tcp": 2001}))
    changed = document({"name": "SALES", "tcp": 1001})
    changed["node"]["listen"] = ["127.0.0.9"]
    with capturedLogs() as events:
        nodes.reload(0, changed)
    assert nodes.nodes[0].config.listen == ("127.0.0.1",)
    said = [e["setting"] for e in events if e.get("log_level") == LogLevel.warn]
    assert "listen" in said


def test_a_file_that_fails_to_load_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    writeNodeConfig(path, ["127.0.0.1"], instances({"name": "SALES", "tcp": 1001}))
    network = FakeNetwork()
    node = NodeService(loadConfig(path), network.reactor("127.0.0.1"), configPath=path)
    node.startService()
    try:
        path.write_text("[node]\nlisten = [\n")
        with capturedLogs() as events:
            assert node.reloadFile() is False
        [error] = [e for e in events if e.get("log_level") == LogLevel.error]
        assert "not valid TOML" in error["error"]
        assert node.registry.lookup("SALES") is not None
        assert node.membership.counters["reloads_failed"] == 1
    finally:
        node.stopService()


# Real processes


@pytest.mark.parametrize("runner", ["srp serve", "twistd -n srp"])
def test_sighup_reloads_under_load_and_never_stops_the_node(tmp_path: Path,
                                                           runner: str) -> None:
    address = freeLoopbackAddress()
    path = tmp_path / "node.toml"

    def write(*tables: dict[str, Any]) -> None:
        writeNodeConfig(path, [address], instances(*tables), tables={"cluster": {"name": "hup"}})

    write({"name": "SALES", "tcp": 1001})
    argv = None if runner == "srp serve" else [
        str(BIN / "twistd"), "-n", "--pidfile=", "srp", "--config", str(path)]
    with NodeProcess(path, tmp_path / "node.log", argv=argv) as node:
        deadline = time.monotonic() + 10
        while "Active for cluster" not in node.log():
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.05)
        stream = RequestStream((address, 1434), InstanceRequest("SALES").encode(), rate=1000,
                               timeout=0.25)
        steps = [
            lambda: write({"name": "SALES", "tcp": 1002}),          # changed
            lambda: write({"name": "SALES", "tcp": 1002}, {"name": "NEW", "tcp": 1003}),
            lambda: path.write_text("[node]\nlisten = [\n"),        # fails to load
            lambda: write({"name": "SALES", "tcp": 1004}),          # NEW removed
        ]
        schedule = []
        for n, step in enumerate(steps):
            schedule.append((0.3 + 0.4 * n, step))
            schedule.append((0.35 + 0.4 * n, lambda: os.kill(node.pid, signal.SIGHUP)))
        exchanges = stream.run(2.0, at=schedule)
        assert node.process is not None and node.process.poll() is None, node.log()
        assert [e for e in exchanges if e.answeredAt is None] == []
        ports = [tcpOf(e.reply) for e in exchanges]
        assert ports[0] == 1001 and ports[-1] == 1004
        assert set(ports) == {1001, 1002, 1004}
        status = json.loads(srp("status", "--cluster", "hup", "--json", address).stdout)
        assert status["role"] == "active"
        assert [r["instance"] for r in status["registrations"]] == ["SALES"]
        assert status["counters"]["reloads"] == 3
        assert status["counters"]["reloads_failed"] == 1
        log = node.log()
        assert log.count("Reload failed, the running configuration stays") == 1
        assert "Reloaded" in log
        # twistd ends by the signal it was sent, as Twisted does since 22.8.
        assert node.stop() == (0 if runner == "srp serve" else -signal.SIGTERM), node.log()
