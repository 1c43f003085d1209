"""
Three real `srp serve` nodes on three network-namespace hosts, with a
three-member etcd spread over them (one member per host, on the host's LAN
address), under etcd faults and a partition.

Every node is asked srp's extended resolve every few milliseconds from its
own host (so an isolated host is still heard), and every answer's fencing
token goes to the history checker (L{srp.testing.history.checkFencing}):
at most one node answers as active at any moment, through kill -9 of one
etcd member (nothing changes), of two (quorum lost: the answers go on from
the last state, the active steps down, nobody is elected, the nodes say they
are stale), their recovery, and a partition that isolates the active's host.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from bench.common import waitUntil
from bench.takeover import WallClock
from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.clusterkey import loadKey
from srp.testing.etcd import EtcdCluster
from srp.testing.history import Claim, Reign, checkFencing
from srp.testing.netns import Host, lan
from srp.testing.processes import NodeProcess, writeKeyFile, writeNodeConfig
from srp.wire.cluster import Resolve, ResolveReply, clusterId
from srp.wire.mcsqlr import BROWSER_PORT
from tests.conftest import BIN

CLUSTER = "fleet"
TTL = 1
#: How often each node is asked, and how long an answer is waited for.
EVERY = 0.01
PATIENCE = 0.2


@frozen
class Seen:
    """One answer: its fencing claim and how many registrations of SALES it listed."""

    claim: Claim
    listed: int


class Recorder:
    """
    Asks each host's own node for SALES, from inside that host, one request
    at a time (each spelt differently, so a late answer is never taken for
    the next one's), and keeps every answer.
    """

    def __init__(self, hosts: Sequence[Host], key: bytes) -> None:
        self.hosts = list(hosts)
        self.auth = ClusterAuthenticator(WallClock(), clusterId(CLUSTER), randomNodeId(), key)
        self.sockets = [host.inside(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                        for host in hosts]
        self.seen: list[Seen] = []
        self._latest: dict[str, Seen] = {}
        self.lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> list[Seen]:
        self._running = False
        self._thread.join()
        for sock in self.sockets:
            sock.close()
        return self.snapshot()

    def snapshot(self, since: float = 0.0) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.claim.sent >= since]

    def latest(self, host: int) -> Seen | None:
        """The last answer of the node on C{hosts[host]}."""
        address = self.hosts[host].address
        with self.lock:
            return self._latest.get(address)

    def _run(self) -> None:
        counter = 0
        asked: dict[int, tuple[str, float]] = {}  # socket index -> (name asked, when)
        while self._running:
            now = time.monotonic()
            for n, sock in enumerate(self.sockets):
                if n not in asked or now - asked[n][1] > PATIENCE:
                    counter += 1
                    name = "".join(c.lower() if counter >> i & 1 else c
                                   for i, c in enumerate("SALES"))
                    sock.sendto(self.auth.seal(Resolve(name), 0),
                                (self.hosts[n].address, BROWSER_PORT))
                    asked[n] = (name, time.monotonic())
            readable, _, _ = select.select(self.sockets, [], [], EVERY)
            for sock in readable:
                n = self.sockets.index(sock)
                datagram, source = sock.recvfrom(65535)
                received = time.monotonic()
                try:
                    envelope = self.auth.open(datagram, source[0])
                except Rejected:
                    continue
                message = envelope.message
                if not (isinstance(message, ResolveReply) and n in asked
                        and message.instanceName == asked[n][0]):
                    continue
                seen = Seen(Claim(asked.pop(n)[1], received, envelope.sender,
                                  envelope.epoch), len(message.registrations))
                with self.lock:
                    self.seen.append(seen)
                    self._latest[source[0]] = seen


def reigns(recorder: Recorder, since: float = 0.0) -> tuple[Reign, ...]:
    """Every active the answers asked for since C{since} show."""
    return checkFencing([s.claim for s in recorder.snapshot(since)]).reigns


def activeHost(recorder: Recorder) -> int | None:
    """The index of the host whose node last answered as active, if exactly one did."""
    active = [n for n in range(len(recorder.hosts))
              if (seen := recorder.latest(n)) is not None and seen.claim.token]
    return active[0] if len(active) == 1 else None


def stale(host: Host, keyFile: Path) -> bool:
    """What the node on C{host} says in its status: whether its copy may be behind etcd."""
    done = subprocess.run(
        host.command(str(BIN / "srp"), "status", "--json", "--cluster", CLUSTER,
                     "--key-file", str(keyFile), "--timeout", "0.5", host.address),
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return bool(document["stale"])


@pytest.fixture
def hosts() -> Iterator[Sequence[Host]]:
    with lan(3) as made:
        yield made


def test_partition_and_quorum(hosts: Sequence[Host], tmp_path: Path) -> None:
    """
    kill -9 of one etcd member: the same active, the same answers; of a
    second (quorum lost): the answers go on from the last state, the active
    steps down and nobody is elected, the nodes say stale; the members
    return and one node is elected with a larger token; the active's host
    is cut off: it stops answering as active before another starts.  At no
    moment do two nodes answer as active.
    """
    keyFile = writeKeyFile(tmp_path / "cluster.key")
    etcd = EtcdCluster(directory=tmp_path, hosts=hosts).start()
    nodes: list[NodeProcess] = []
    recorder: Recorder | None = None
    try:
        for n, host in enumerate(hosts):
            config = writeNodeConfig(
                tmp_path / f"node{n}.toml", [host.address],
                [{"name": "SALES", "tcp": 50000 + n, "check": "none"}],
                tables={"cluster": {"name": CLUSTER, "backend": "etcd",
                                    "etcd": etcd.endpoints, "lease_ttl": TTL,
                                    "key_file": str(keyFile)}})
            nodes.append(NodeProcess(config, tmp_path / f"node{n}.log",
                                     prefix=host.command()).start())
        recorder = watch = Recorder(hosts, loadKey(keyFile)).start()

        def everywhere() -> bool:
            return all((s := watch.latest(n)) is not None and s.listed == 3 for n in range(3))

        waitUntil(lambda: everywhere() and activeHost(watch) is not None, 10,
                "every node to list all three, and one active")

        # kill -9 of one etcd member (not on the active's host): nothing changes.
        active = activeHost(watch)
        assert active is not None
        others = [n for n in range(3) if n != active]
        [first] = reigns(watch)
        since = time.monotonic()
        etcd.members[others[0]].kill()
        time.sleep(2 * TTL)
        window = watch.snapshot(since)
        assert {s.listed for s in window} == {3}
        assert [(r.token, r.node) for r in reigns(watch, since)] == [
            (first.token, first.node)]
        assert not any(stale(host, keyFile) for host in hosts)

        # kill -9 of a second (quorum lost): answers go on, nobody leads, all stale.
        since = time.monotonic()
        etcd.members[others[1]].kill()
        waitUntil(lambda: all(stale(host, keyFile) for host in hosts), 10, "every node stale")
        waitUntil(lambda: activeHost(watch) is None and all(
            (s := watch.latest(n)) is not None and not s.claim.token for n in range(3)),
            2 * TTL, "the active to step down")
        time.sleep(2 * TTL)
        window = watch.snapshot(since)
        assert {s.listed for s in window} == {3}
        assert [r.token for r in reigns(watch, since)] in ([], [first.token])
        assert all("etcd is out of reach" in node.log() for node in nodes)

        # The members come back: an active again.  etcd renews every lease when
        # it elects a raft leader, so the old active's lease (and leader key)
        # normally outlived the outage and it resumes with its token; any
        # other node would need a new election, and a larger token.
        since = time.monotonic()
        for n in others:
            etcd.members[n].restart()
        waitUntil(lambda: activeHost(watch) is not None, 10, "a new active")
        waitUntil(lambda: not any(stale(host, keyFile) for host in hosts), 10, "fresh again")
        [second] = reigns(watch, since)
        assert second.token > first.token or (second.token, second.node) == (
            first.token, first.node)

        # The active's host cut off: it steps down before another is elected.
        isolated = activeHost(watch)
        assert isolated is not None
        since = time.monotonic()
        hosts[isolated].cut()
        try:
            waitUntil(lambda: (a := activeHost(watch)) is not None and a != isolated,
                    10, "an active on the majority side")
            after = reigns(watch, since)
            assert [r.node for r in after][-1] != second.node
            assert after[-1].token > second.token
            assert stale(hosts[isolated], keyFile)
        finally:
            hosts[isolated].mend()
        time.sleep(TTL)
        report = checkFencing([s.claim for s in recorder.stop()])
        recorder = None
        assert report.ok, report
        assert report.answers > 1000
    finally:
        if recorder is not None:
            recorder.stop()
        for node in nodes:
            node.stop()
        etcd.stop()
