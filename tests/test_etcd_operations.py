"""
An etcd-backed node run like a UDP one, with real `srp serve` processes on a
real etcd: `srp register` and `srp unregister` at any node, `[limits]`
bounds on the watch-fed copy, `/metrics` with the etcd gauges, and `srp
status` saying how stale the node is.  The tests share one etcd (each under
a cluster name of its own), but for the one that stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from srp.testing.etcd import EtcdCluster
from srp.testing.processes import NodeProcess, freeLoopbackAddress, stopProcess, writeNodeConfig

from .conftest import BIN, srp
from .test_etcd_processes import CLUSTER, TTL, plain, resolved, status, waitFor
from .test_metrics_processes import scrape, value


def node(directory: Path, name: str, etcd: EtcdCluster, instances: list[dict[str, Any]],
         metrics: bool = False, clusterName: str = CLUSTER,
         **tables: dict[str, Any]) -> NodeProcess:
    """
    A real `srp serve` of cluster C{clusterName} on etcd at a free address,
    with C{tables} and /metrics if asked.
    """
    address = freeLoopbackAddress()
    more = dict(tables)
    if metrics:
        more["metrics"] = {"listen": f"{address}:9464"}
    config = writeNodeConfig(
        directory / f"{name}.toml", [address], [dict(i, check="none") for i in instances],
        tables={"cluster": {"name": clusterName, "backend": "etcd", "etcd": etcd.endpoints,
                            "lease_ttl": TTL}} | more)
    return NodeProcess(config, directory / f"{name}.log").start()


def register(address: str, *more: str, clusterName: str = CLUSTER
             ) -> subprocess.CompletedProcess[str]:
    """`srp register` of LEASED at C{address}."""
    return srp("register", "--cluster", clusterName, address, "LEASED", *more)


def test_registerAtOneNodeUnregisterAtAnother(etcd: EtcdCluster, clusterName: str,
                                              tmp_path: Path) -> None:
    """
    A registration by command taken by one node reaches every node, with that
    node's address; another node unregisters it; a second unregister is refused.
    """
    a = node(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}], clusterName=clusterName)
    b = node(tmp_path, "b", etcd, [{"name": "REPORTS", "tcp": 50102}], clusterName=clusterName)
    try:
        result = register(a.address, "--tcp", "41433", "--ttl", "60", "--json",
                          clusterName=clusterName)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"instance": "LEASED", "priority": 0,
                                             "result": "registered", "tcp": 41433,
                                             "np": None, "ttl": 60.0}
        waitFor(lambda: bool(resolved(b.address, "LEASED", clusterName)), 5, "LEASED at node b")
        [leased] = resolved(b.address, "LEASED", clusterName)
        assert (leased["host"], leased["tcp"]) == (a.address, 41433)
        answer = plain(a.address, "LEASED")
        assert answer is not None and b";tcp;41433;;" in answer
        assert plain(b.address, "LEASED") is None  # its ports are at node a's address
        document = status(a.address, clusterName)
        assert document["counters"]["leases_granted"] == 1
        assert [r.get("by_command") for r in document["registrations"]
                if r["instance"] == "LEASED"] == [True]

        moved = register(b.address, "--tcp", "41500", clusterName=clusterName)
        assert moved.returncode == 0, moved.stderr
        waitFor(lambda: [r["tcp"] for r in resolved(a.address, "LEASED", clusterName)] == [41500],
                5, "the move at node a")
        assert [r["host"] for r in resolved(a.address, "LEASED", clusterName)] == [b.address]
        assert status(b.address, clusterName)["counters"]["lease_renewals"] == 1

        gone = srp("unregister", "--cluster", clusterName, b.address, "LEASED")
        assert gone.returncode == 0, gone.stderr
        waitFor(lambda: not resolved(a.address, "LEASED", clusterName), 5, "LEASED to go")
        again = srp("unregister", "--cluster", clusterName, a.address, "LEASED")
        assert again.returncode == 1
        assert again.stderr == "srp: refused: LEASED at priority 0 is not registered by " \
            "command\n"
    finally:
        a.stop()
        b.stop()


def test_leaseEndsWithItsRegistrant(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """
    `srp register --keep --ttl 1` renews its etcd lease; kill -9 of it, and the
    registration leaves every node once its TTL is up, though the node that
    took it runs on.
    """
    a = node(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}], clusterName=clusterName)
    keeper = subprocess.Popen(
        [str(BIN / "srp"), "register", "--keep", "--ttl", "1", "--cluster", clusterName,
         a.address, "LEASED", "--tcp", "41433"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        waitFor(lambda: bool(resolved(a.address, "LEASED", clusterName)), 5, "LEASED")
        time.sleep(2.5)  # longer than the TTL: the renewals keep it
        assert [r["tcp"] for r in resolved(a.address, "LEASED", clusterName)] == [41433]
        os.kill(keeper.pid, signal.SIGKILL)
        took = waitFor(lambda: not resolved(a.address, "LEASED", clusterName), 10,
                       "LEASED to expire")
        assert took < 1 + 2.5
        assert resolved(a.address, "SALES", clusterName)
    finally:
        stopProcess(keeper)
        a.stop()


def leasedDown(address: str, clusterName: str) -> bool | None:
    """Whether LEASED is down in the status of the node at C{address} (None: not there)."""
    states = [r["down"] for r in status(address, clusterName)["registrations"]
              if r["instance"] == "LEASED"]
    return states[0] if states else None


def test_leaderChecksRegistrationsByCommand(etcd: EtcdCluster, clusterName: str,
                                            tmp_path: Path) -> None:
    """
    The elected leader checks a registration by command: its server closes,
    and every node says it is down; a renewal of the same place keeps it
    down; its server listens again, and it is up.
    """
    a = node(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}], clusterName=clusterName)
    b = node(tmp_path, "b", etcd, [{"name": "REPORTS", "tcp": 50102}], clusterName=clusterName)
    server = socket.create_server((a.address, 0))
    port = server.getsockname()[1]
    try:
        assert register(a.address, "--tcp", str(port), "--ttl", "60",
                        clusterName=clusterName).returncode == 0
        waitFor(lambda: leasedDown(b.address, clusterName) is False, 5, "LEASED up at node b")
        time.sleep(1.0)  # checks pass meanwhile
        assert leasedDown(a.address, clusterName) is False
        assert leasedDown(b.address, clusterName) is False
        server.close()
        waitFor(lambda: leasedDown(b.address, clusterName) is True, 5, "LEASED down at node b")
        assert leasedDown(a.address, clusterName) is True
        assert register(a.address, "--tcp", str(port), "--ttl", "60",
                        clusterName=clusterName).returncode == 0
        time.sleep(0.5)
        assert leasedDown(a.address, clusterName) is True
        assert leasedDown(b.address, clusterName) is True
        server = socket.create_server((a.address, port))
        waitFor(lambda: leasedDown(b.address, clusterName) is False, 10,
                "LEASED up again at node b")
    finally:
        # etcd outlives the test: leave nothing behind for the next one.
        srp("unregister", "--cluster", clusterName, a.address, "LEASED")
        server.close()
        a.stop()
        b.stop()


def test_limitsBoundTheCopy(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """
    max_registrations_per_node and max_instances bound what a node takes from
    etcd: the rest is left out, counted and logged once; registering past
    max_instances is refused.
    """
    a = node(tmp_path, "a", etcd, [{"name": n, "tcp": 50101 + i}
                                   for i, n in enumerate(("ONE", "TWO", "THREE"))],
             clusterName=clusterName)
    b = node(tmp_path, "b", etcd, [{"name": "MINE", "tcp": 50200}], clusterName=clusterName,
             limits={"max_registrations_per_node": 2, "max_instances": 3})
    try:
        waitFor(lambda: status(b.address, clusterName)["counters"].get(
            "registrations_refused") == 1, 5, "b to refuse one of a's")
        known = sorted(r["instance"] for r in status(b.address, clusterName)["registrations"])
        assert len(known) == 3 and "MINE" in known
        assert b.log().count("a [limits] bound (registrations_refused: 1 times)") == 1
        refused = register(b.address, "--tcp", "41433", clusterName=clusterName)
        assert refused.returncode == 1
        assert refused.stderr == "srp: refused: the cluster holds 3 instances, its limit\n"
        assert status(b.address, clusterName)["counters"]["instances_refused"] == 1
    finally:
        a.stop()
        b.stop()


def test_metricsAndStaleness(tmp_path: Path) -> None:
    """
    /metrics of an etcd-backed node: its role, registrations and the etcd
    gauges, as status says them; with etcd stopped, stale and for how long,
    in the metrics and in `srp status`.
    """
    with EtcdCluster(size=1) as etcd:
        a = node(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}], metrics=True)
        b = node(tmp_path, "b", etcd, [{"name": "REPORTS", "tcp": 50102}], metrics=True)
        try:
            waitFor(lambda: len(status(b.address)["registrations"]) == 2, 5, "both at b")
            waitFor(lambda: status(a.address)["role"] == "active", 5, "a to lead")
            for n, leads in ((a, 1.0), (b, 0.0)):
                samples = scrape((n.address, 9464))
                document = status(n.address)
                assert value(samples, "srp_etcd_leader") == leads
                assert value(samples, "srp_role", role="active") == leads
                assert value(samples, "srp_etcd_stale") == 0.0
                assert value(samples, "srp_etcd_stale_seconds") == 0.0
                assert value(samples, "srp_etcd_reachable") == 1.0
                assert value(samples, "srp_etcd_revision") == document["revision"]
                assert value(samples, "srp_etcd_fencing_token") == document["fencing_token"]
                assert value(samples, "srp_registrations", state="up") == 2.0
                assert value(samples, "srp_own_instances", state="up") == 1.0
                assert value(samples, "srp_passives") is None
            human = srp("status", "--cluster", CLUSTER, b.address)
            assert human.returncode == 0, human.stderr
            assert "ETCD" in human.stdout and " no\n" in human.stdout

            etcd.members[0].kill()
            waitFor(lambda: status(b.address)["stale"] is True, 10, "b to be stale")
            time.sleep(1.0)
            samples = scrape((b.address, 9464))
            document = status(b.address)
            assert value(samples, "srp_etcd_stale") == 1.0
            assert value(samples, "srp_etcd_reachable") == 0.0
            stale = value(samples, "srp_etcd_stale_seconds")
            assert stale is not None and 1.0 <= stale <= document["stale_seconds"] < 10
            assert document["etcd"] == "unreachable"
            assert "no etcd endpoint answered" in document["etcd_error"]
            human = srp("status", "--cluster", CLUSTER, b.address)
            assert "unreachable" in human.stdout and "yes, " in human.stdout
            assert "etcd: no etcd endpoint answered" in human.stdout
            refused = register(b.address, "--tcp", "41433")
            assert refused.returncode == 1
            assert refused.stderr.startswith("srp: refused: etcd did not take it: no etcd "
                                             "endpoint answered (")
        finally:
            a.stop()
            b.stop()
