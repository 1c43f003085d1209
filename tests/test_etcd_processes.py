"""
Real `srp serve` nodes with `backend = "etcd"` on a real three-member etcd:
registrations reach every node's answers, a killed node's go with its
lease, one etcd member's death changes nothing, and answers go on with
etcd entirely stopped.  The tests share one etcd (each under a cluster name
of its own), but for the one that kills its members.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from srp.testing.etcd import EtcdCluster
from srp.testing.load import RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress, freeTCPPort, writeNodeConfig
from srp.wire import InstanceRequest
from srp.wire.mcsqlr import BROWSER_PORT

from .conftest import srp
from .test_fencing_processes import tcpOf
from .test_metrics_processes import scrape, value

CLUSTER = "fleet"
TTL = 1


def waitFor(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until C{predicate()} holds; the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def plain(address: str, instance: str, timeout: float = 0.3) -> bytes | None:
    """A raw [MC-SQLR] CLNT_UCAST_INST for C{instance} at C{address}: the reply, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"\x04" + instance.encode() + b"\0", (address, BROWSER_PORT))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def resolved(address: str, instance: str, clusterName: str = CLUSTER) -> list[dict[str, Any]]:
    """What the real `srp resolve` prints for C{instance} asked at C{address} ([] if nothing)."""
    done = srp("resolve", "--json", "--cluster", clusterName, "--timeout", "0.5",
               f"{address}/{instance}")
    if done.returncode:
        return []
    answer: list[dict[str, Any]] = json.loads(done.stdout)
    return answer


def status(address: str, clusterName: str = CLUSTER) -> dict[str, Any]:
    """The node's `srp status --json`."""
    done = srp("status", "--json", "--cluster", clusterName, address)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def startNode(directory: Path, name: str, etcd: EtcdCluster, instances: list[dict[str, Any]],
              address: str | None = None, clusterName: str = CLUSTER,
              metrics: tuple[str, int] | None = None, **cluster: Any) -> NodeProcess:
    """
    A real `srp serve` of cluster C{clusterName} on etcd, at a free (or the
    given) address, serving /metrics at C{metrics} if given.
    """
    more = {} if metrics is None else {"metrics": {"listen": f"{metrics[0]}:{metrics[1]}"}}
    config = writeNodeConfig(
        directory / f"{name}.toml", [address or freeLoopbackAddress()],
        [dict(i, check="none") for i in instances],
        tables={"cluster": {"name": clusterName, "backend": "etcd", "etcd": etcd.endpoints,
                            "lease_ttl": TTL} | cluster} | more)
    return NodeProcess(config, directory / f"{name}.log").start()


@pytest.fixture
def ownEtcd() -> Iterator[EtcdCluster]:
    """A three-member etcd of the test's own, for a test that kills its members."""
    with EtcdCluster(size=3) as cluster:
        yield cluster


def test_registrationsEverywhere(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """
    Each node's registration reaches the other's extended answers (srp resolve)
    with the address of the node that registered it; plain [MC-SQLR] answers
    name only the registrations whose ports listen at the address asked.
    """
    a = startNode(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}], clusterName=clusterName)
    b = startNode(tmp_path, "b", etcd, [{"name": "REPORTS", "tcp": 50102}],
                  clusterName=clusterName)
    try:
        waitFor(lambda: bool(resolved(b.address, "SALES", clusterName)), 5, "SALES at node b")
        [sales] = resolved(b.address, "SALES", clusterName)
        assert (sales["host"], sales["tcp"]) == (a.address, 50101)
        [reports] = resolved(a.address, "REPORTS", clusterName)
        assert (reports["host"], reports["tcp"]) == (b.address, 50102)
        answer = plain(a.address, "SALES")
        assert answer is not None and b";tcp;50101;;" in answer
        assert plain(b.address, "SALES") is None
        document = status(b.address, clusterName)
        assert document["backend"] == "etcd" and document["stale"] is False
        assert sorted(r["instance"] for r in document["registrations"]) == ["REPORTS", "SALES"]
    finally:
        a.stop()
        b.stop()


def test_killedNodeVanishes(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """kill -9 of a node: its registrations leave the others' answers once its lease expires."""
    a = startNode(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}], clusterName=clusterName)
    b = startNode(tmp_path, "b", etcd, [{"name": "REPORTS", "tcp": 50102}],
                  clusterName=clusterName)
    try:
        waitFor(lambda: bool(resolved(b.address, "SALES", clusterName)), 5, "SALES at node b")
        os.kill(a.pid, signal.SIGKILL)
        took = waitFor(lambda: not resolved(b.address, "SALES", clusterName), 10,
                       "SALES to vanish")
        # The lease's TTL, etcd's expiry sweep (0.5 s) and a resolve's own timeout.
        assert took < TTL + 2.5
        assert resolved(b.address, "REPORTS", clusterName)
    finally:
        a.stop()
        b.stop()


def test_etcdFaults(ownEtcd: EtcdCluster, tmp_path: Path) -> None:
    """
    kill -9 of one etcd member changes nothing (a new registration still
    arrives); of two (quorum lost), answers go on from the last state and the
    nodes say they are stale, until the members return; with etcd entirely
    stopped, the same.
    """
    etcd = ownEtcd
    a = startNode(tmp_path, "a", etcd, [{"name": "SALES", "tcp": 50101}])
    b = startNode(tmp_path, "b", etcd, [{"name": "REPORTS", "tcp": 50102}])
    c: NodeProcess | None = None
    try:
        waitFor(lambda: bool(resolved(b.address, "SALES")), 5, "SALES at node b")
        etcd.members[0].kill()
        time.sleep(TTL * 2)
        assert resolved(b.address, "SALES") and resolved(a.address, "REPORTS")
        c = startNode(tmp_path, "c", etcd, [{"name": "AUDIT", "tcp": 50103}])
        waitFor(lambda: bool(resolved(b.address, "AUDIT")), 5, "AUDIT at node b")
        assert status(b.address)["stale"] is False

        etcd.members[1].kill()  # quorum lost
        waitFor(lambda: status(b.address)["stale"] is True, 10, "node b to be stale")
        time.sleep(TTL * 2)
        assert plain(b.address, "REPORTS") is not None
        assert [r["host"] for r in resolved(b.address, "SALES")] == [a.address]
        etcd.members[0].restart()
        etcd.members[1].restart()
        waitFor(lambda: status(b.address)["stale"] is False, 10, "node b to recover")
        assert {r["host"] for r in resolved(b.address, "AUDIT")} == {c.address}

        for member in etcd.members:
            member.kill()
        waitFor(lambda: status(b.address)["stale"] is True, 10, "node b to be stale")
        time.sleep(TTL * 2)
        assert plain(b.address, "REPORTS") is not None
        assert {r["host"] for r in resolved(b.address, "AUDIT")} == {c.address}
        assert [r["host"] for r in resolved(b.address, "SALES")] == [a.address]
        assert "etcd is out of reach" in b.log()
    finally:
        for node in (a, b, c):
            if node is not None:
                node.stop()


def test_leaderHoldsSharedPort(etcd: EtcdCluster, clusterName: str, tmp_path: Path) -> None:
    """
    With answer = "leader", two nodes on one address: the elected one answers;
    kill -9 of it, and the other binds the port after the lease expires.
    """
    address = freeLoopbackAddress()
    first = startNode(tmp_path, "first", etcd, [{"name": "SALES", "tcp": 50101}],
                      address=address, answer="leader", clusterName=clusterName)
    waitFor(lambda: plain(address, "SALES") is not None, 5, "the first node to lead")
    second = startNode(tmp_path, "second", etcd, [{"name": "SALES", "tcp": 50102,
                                                   "priority": 1}],
                       address=address, answer="leader", clusterName=clusterName)
    try:
        leader = status(address, clusterName)
        assert leader["role"] == "active" and leader["fencing_token"] > 0
        os.kill(first.pid, signal.SIGKILL)
        took = waitFor(lambda: b";tcp;50102;;" in (plain(address, "SALES") or b""), 10,
                       "the second node to answer")
        assert took < TTL + 2.5
        successor = status(address, clusterName)
        assert successor["fencing_token"] > leader["fencing_token"]
        assert successor["node"] != leader["node"]
    finally:
        first.stop()
        second.stop()


def test_stoppedLeaderIsFencedAndStepsDown(etcd: EtcdCluster, clusterName: str,
                                          tmp_path: Path) -> None:
    """
    With answer = "leader", three nodes on one address; the leader is
    stopped (SIGSTOP) under a stream of plain [MC-SQLR] requests, and the
    node with the best registration is killed at once (its registration is
    what the stopped leader's stale copy would answer).  The follower left
    is elected once the leader's lease expires and answers on the
    duplicates of the port it holds, within the TTL and a margin.  The old
    leader, continued after TTL + 1 s, answers nothing from its stale
    copy: the answers change at most once (its registration comes back)
    and never to the killed node's.  Then exactly one node leads, with a
    larger fencing token, and the continued node follows it.
    """
    address = freeLoopbackAddress()
    metrics = {name: (address, freeTCPPort(address)) for name in "abc"}
    # (tcp, priority): the best registration (c's) is the one that goes.
    registered = {"a": (50101, 1), "b": (50102, 2), "c": (50103, 0)}
    nodes: dict[str, NodeProcess] = {}

    def start(name: str) -> NodeProcess:
        tcp, priority = registered[name]
        nodes[name] = startNode(tmp_path, name, etcd, [{"name": "SALES", "tcp": tcp,
                                                         "priority": priority}],
                                address=address, answer="leader", clusterName=clusterName,
                                metrics=metrics[name])
        return nodes[name]

    def nodeIdOf(node: NodeProcess) -> str:
        [nodeId] = [line.split("srp node ", 1)[1].split()[0] for line in node.log().splitlines()
                    if "srp node " in line and NodeProcess.READY in line]
        return nodeId

    def holds(follower: NodeProcess, leader: NodeProcess) -> bool:
        return f"Holding the cluster sockets of node {nodeIdOf(leader)}" in follower.log()

    try:
        a = start("a")
        waitFor(lambda: plain(address, "SALES") is not None, 5, "node a to lead")
        b, c = start("b"), start("c")
        waitFor(lambda: holds(b, a) and holds(c, a), 10, "the followers to hold the port")
        waitFor(lambda: b";tcp;50103;" in (plain(address, "SALES") or b""), 5,
                "node c's registration at the leader")
        before = status(address, clusterName)
        assert before["node"] == nodeIdOf(a) and before["role"] == "active"

        stoppedAt: list[float] = []
        continuedAt: list[float] = []

        def stop() -> None:
            os.kill(a.pid, signal.SIGSTOP)
            os.kill(c.pid, signal.SIGKILL)
            stoppedAt.append(time.monotonic())

        def cont() -> None:
            os.kill(a.pid, signal.SIGCONT)
            continuedAt.append(time.monotonic())

        stoppedFor = TTL + 1.0
        exchanges = RequestStream((address, BROWSER_PORT), InstanceRequest("SALES").encode(),
                                  rate=100, timeout=0.05).run(
            0.3 + stoppedFor + 2.0, at=[(0.3, stop), (0.3 + stoppedFor, cont)])
        answered = [e for e in exchanges if e.sentAt > stoppedAt[0] and e.answeredAt is not None]
        assert answered, "nobody took over"
        gap = answered[0].answeredAt - stoppedAt[0]  # type: ignore[operator]
        # The lease's TTL, etcd's expiry sweep (0.5 s), the watch, the campaign.
        assert gap < TTL + 1.0, f"answered again after {gap:.3f} s"
        assert answered[0].sentAt < continuedAt[0], "answered only once continued"
        after = [tcpOf(e) for e in exchanges
                 if e.sentAt > continuedAt[0] and e.answeredAt is not None]
        assert after and 50103 not in after, f"the stopped leader's stale answers: {after}"
        changes = sum(x != y for x, y in itertools.pairwise(after))
        assert changes <= 1, f"answers after SIGCONT: {after}"
        print(f"answered again {gap:.3f} s after SIGSTOP; after SIGCONT: {changes} change")

        waitFor(lambda: b";tcp;50101;" in (plain(address, "SALES") or b""), 10,
                "node a's registration back")
        leader = status(address, clusterName)
        assert leader["node"] == nodeIdOf(b) and leader["role"] == "active"
        assert leader["leader"] == nodeIdOf(b)
        assert leader["fencing_token"] > before["fencing_token"]
        assert leader["counters"]["sockets_taken"] == 1
        assert leader["counters"].get("bind_failed", 0) == 0
        waitFor(lambda: holds(a, b), 10, "the continued node to hold the new leader's port")
        for node, leads in ((a, 0.0), (b, 1.0)):
            samples = scrape(metrics["a" if node is a else "b"])
            assert value(samples, "srp_etcd_leader") == leads
            assert value(samples, "srp_etcd_fencing_token") == leader["fencing_token"]
            assert value(samples, "srp_role", role="passive") == 1.0 - leads
        assert "no longer the leader" in a.log()
    finally:
        for node in nodes.values():
            if node.process is not None and node.process.poll() is None:
                os.kill(node.pid, signal.SIGCONT)
            node.stop()
