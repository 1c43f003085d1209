"""
The etcd backend at scale, on a real three-member etcd on loopback.

C{etcd_scale}: one C{srp serve} node registering 10,000 instances, and the
time until another node answers srp's extended resolve for every one;
then 100 nodes of 1,000 instances each, simulated clients of the same etcd
(L{srp.testing.fleet}: one process writing each node's keys on its own
lease, as a node does), and the time until each of three real nodes
answers for all 100,000.

C{etcd_throughput}: [MC-SQLR] replies/s of a node answering from its
watch-fed copy (C{backend = "etcd"}) against the same node in the UDP
cluster mode, 10,000 instances each, the load generator taking turns
between them (as C{resolve_throughput} does).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Settings, pinTo, verdict
from srp.cli import formatTable
from srp.testing.etcd import EtcdCluster
from srp.testing.fleet import FleetProcess, resolveAll
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig

CLUSTER = "benchscale"
#: Target of etcd_throughput: etcd mode / UDP mode in replies/s.
TARGET_RATIO = 0.95


def etcdTable(etcd: EtcdCluster) -> dict[str, Any]:
    """The [cluster] table of a node of L{CLUSTER} on C{etcd}."""
    return {"name": CLUSTER, "backend": "etcd", "etcd": etcd.endpoints, "lease_ttl": 2}


def startNode(directory: Path, name: str, instances: list[dict[str, Any]],
              tables: dict[str, dict[str, Any]], attempts: int = 3) -> NodeProcess:
    """A real C{srp serve} at a free loopback address (another, if that one was taken)."""
    for attempt in range(attempts):
        config = writeNodeConfig(directory / f"{name}.toml", [freeLoopbackAddress()],
                                 instances, tables=tables)
        try:
            return NodeProcess(config, directory / f"{name}.log").start(timeout=120)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def residentMB(pid: int) -> float:
    """The resident memory of process C{pid}, in MB."""
    rss = subprocess.run(["ps", "-o", "rss=", str(pid)], capture_output=True, text=True)
    return int(rss.stdout.strip() or 0) / 1024


def untilAll(node: NodeProcess, names: list[str], start: float, timeout: float) -> float:
    """Ask C{node} for every name until it answers for all: the seconds since C{start}."""
    missing = set(names)
    deadline = time.monotonic() + timeout
    while missing:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.address} never answered for {len(missing)} instances")
        missing = resolveAll(node.address, CLUSTER, missing, timeout=1.0)
    return time.monotonic() - start


def converged(nodes: list[NodeProcess], names: list[str], start: float,
              timeout: float) -> dict[str, list[float]]:
    """
    When each node answered for a sample of C{names} (every 100th and the
    last), since C{start}; then how long one pass asking each for all of
    them took (it must find every one).
    """
    sample = names[::100] + names[-1:]
    seen = [untilAll(node, sample, start, timeout) for node in nodes]
    passes = []
    for node in nodes:
        began = time.monotonic()
        missing = resolveAll(node.address, CLUSTER, names, timeout=timeout)
        if missing:
            raise RuntimeError(f"{node.address} does not answer for {len(missing)} instances")
        passes.append(time.monotonic() - began)
    return {"sample_answered_s": seen, "full_pass_s": passes}


def etcd_scale(settings: Settings) -> dict[str, Any]:
    """10,000 instances on one node; 100 simulated nodes of 1,000 seen by real nodes."""
    instances = 1000 if settings.quick else 10_000
    fleetNodes, fleetInstances = (10, 100) if settings.quick else (100, 1000)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="srp-bench-etcd-") as scratch, \
            EtcdCluster(size=3) as etcd:
        directory = Path(scratch)
        tables = {"cluster": etcdTable(etcd)}
        names = [f"I{n:05d}" for n in range(instances)]
        nodes = [startNode(directory, "other", [{"name": "OTHER", "tcp": 1, "check": "none"}],
                           tables)]
        try:
            start = time.monotonic()
            nodes.append(startNode(directory, "many", [
                {"name": name, "tcp": 10000 + n, "check": "none"}
                for n, name in enumerate(names)], tables))
            started = time.monotonic() - start
            result["one_node"] = {"instances": instances, "started_s": started,
                                  "rss_mb": residentMB(nodes[1].pid)
                                  } | converged(nodes[:1], names, start, 120)
        finally:
            for node in nodes:
                node.stop()
        nodes = [startNode(directory, f"real{n}", [{"name": f"REAL{n}", "tcp": 1,
                                                    "check": "none"}], tables)
                 for n in range(3)]
        fleet = FleetProcess(etcd.endpoints, CLUSTER, fleetNodes, fleetInstances)
        try:
            start = time.monotonic()
            fleet.start(timeout=600)
            written = time.monotonic() - start
            result["fleet"] = {"nodes": fleetNodes, "instances_each": fleetInstances,
                               "written_s": written} | converged(nodes, fleet.names, start,
                                                                   600)
            result["fleet"]["real_node_rss_mb"] = [residentMB(n.pid) for n in nodes]
        finally:
            fleet.stop()
            for node in nodes:
                node.stop()
    one, many = result["one_node"], result["fleet"]

    def times(values: list[float]) -> str:
        return " / ".join(f"{v:.1f} s" for v in values)

    print(formatTable(
        ["REGISTERED BY", "INSTANCES", "IN ETCD", "SAMPLE ANSWERED", "FULL PASS", "NODE RSS"],
        [["one srp serve", f"{instances:,}", "-", times(one["sample_answered_s"]),
          times(one["full_pass_s"]), f"{one['rss_mb']:.0f} MB"],
         [f"{fleetNodes} simulated nodes", f"{fleetNodes * fleetInstances:,}",
          f"{many['written_s']:.1f} s", times(many["sample_answered_s"]),
          times(many["full_pass_s"]),
          " / ".join(f"{r:.0f} MB" for r in many["real_node_rss_mb"])]]))
    print(f"\n{instances:,} instances of one node: another node answered for a sample "
          f"{max(one['sample_answered_s']):.1f} s after the node was started, and for all of "
          f"them; {fleetNodes * fleetInstances:,} of {fleetNodes} simulated nodes: each of 3 "
          f"real nodes answered for a sample {max(many['sample_answered_s']):.1f} s after the "
          "fleet started, and for all of them")
    return result


def etcd_throughput(settings: Settings) -> dict[str, Any]:
    """Replies/s from the watch-fed copy against the UDP cluster mode, in the same run."""
    from bench.run import UNLIMITED, loadRounds, nodeInstances, saturated

    with tempfile.TemporaryDirectory(prefix="srp-bench-etcd-") as scratch, \
            EtcdCluster(size=3) as etcd:
        directory = Path(scratch)
        instances = nodeInstances(settings.instances)
        servers = {
            "udp": startNode(directory, "udp", instances,
                             dict(UNLIMITED) | {"cluster": {"name": CLUSTER}}),
            "etcd": startNode(directory, "etcd", instances,
                              dict(UNLIMITED) | {"cluster": etcdTable(etcd)}),
        }
        for server in servers.values():
            pinTo(server.pid, 0 if settings.pin else None)
        try:
            rows = loadRounds(settings, {name: (server.address, server.pid)
                                         for name, server in servers.items()})
        finally:
            for server in servers.values():
                server.stop()
    # Runs that neither process saturated were slowed by other load on the
    # machine: left out while each mode has another.
    clean = [r for r in rows if saturated(r) != "none"]
    used = clean if {r["server"] for r in clean} == {"udp", "etcd"} else rows
    medians = {name: statistics.median(r["replies_per_s"] for r in used
                                       if r["server"] == name) for name in ("udp", "etcd")}
    ratio = medians["etcd"] / medians["udp"] if medians["udp"] else 0.0
    print(formatTable(["ROUND", "MODE", "REPLIES/S", "LOST", "SATURATED"],
                      [[str(r["round"]), r["server"], f"{r['replies_per_s']:,.0f}",
                        str(r["lost"]), saturated(r)] for r in rows]))
    print(f"\n{len(used)} of {len(rows)} runs used; etcd / udp = {ratio:.2f} in replies/s, "
          f"medians {medians['etcd']:,.0f} and "
          f"{medians['udp']:,.0f} ({verdict(ratio >= TARGET_RATIO)} the "
          f"{TARGET_RATIO:.2f} target)")
    return {"medians": medians, "ratio": ratio, "target": TARGET_RATIO, "runs_used": len(used),
            "rounds": rows}
