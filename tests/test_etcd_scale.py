"""
The etcd backend at scale, reduced to fit `make test` (the full sizes, 10,000
instances on one node and 100 nodes of 1,000, are in `make bench`:
bench/etcd_scale.py).  Real `srp serve` nodes on a real three-member etcd;
the many nodes are simulated clients of that etcd (L{srp.testing.fleet}),
writing their keys as a node does.  The tests share one etcd, each under a
cluster name of its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from srp.testing.etcd import EtcdCluster
from srp.testing.fleet import FleetProcess, resolveAll
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig


def startNode(directory: Path, name: str, etcd: EtcdCluster, clusterName: str,
              instances: list[dict[str, Any]]) -> NodeProcess:
    """A real `srp serve` of cluster C{clusterName} on etcd, at a free address."""
    config = writeNodeConfig(
        directory / f"{name}.toml", [freeLoopbackAddress()],
        [dict(i, check="none") for i in instances],
        tables={"cluster": {"name": clusterName, "backend": "etcd", "etcd": etcd.endpoints,
                            "lease_ttl": 2}})
    return NodeProcess(config, directory / f"{name}.log").start(timeout=60)


def test_oneNodeOfManyInstances(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """2,000 instances of one node: another node answers the extended resolve for each."""
    names = [f"I{n:05d}" for n in range(2000)]
    other = startNode(tmp_path, "other", etcd, clusterName, [{"name": "OTHER", "tcp": 1}])
    many = startNode(tmp_path, "many", etcd, clusterName,
                     [{"name": name, "tcp": 10000 + n} for n, name in enumerate(names)])
    try:
        assert resolveAll(other.address, clusterName, names, timeout=30) == set()
    finally:
        many.stop()
        other.stop()


def test_fleetOfSimulatedNodes(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """
    10 simulated nodes of 200 instances each: two real nodes answer for all
    2,000; when the fleet ends (its leases revoked), none is answered.
    """
    nodes = [startNode(tmp_path, f"real{n}", etcd, clusterName,
                       [{"name": f"REAL{n}", "tcp": 1}])
             for n in range(2)]
    fleet = FleetProcess(etcd.endpoints, clusterName, nodes=10, instances=200).start()
    try:
        for node in nodes:
            assert resolveAll(node.address, clusterName, fleet.names, timeout=30) == set()
        fleet.stop()
        deadline = time.monotonic() + 10
        sample = set(fleet.names[::100])
        while resolveAll(nodes[0].address, clusterName, sample, timeout=0.2) != sample:
            assert time.monotonic() < deadline, "the fleet's registrations did not go"
        assert resolveAll(nodes[1].address, clusterName, sample, timeout=0.5) == sample
        assert resolveAll(nodes[1].address, clusterName, ["REAL0"], timeout=5) == set()
    finally:
        fleet.stop()
        for node in nodes:
            node.stop()
