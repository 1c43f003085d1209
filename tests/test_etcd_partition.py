"""
Three real `srp serve` nodes on three network-namespace hosts, with a
three-member etcd spread over them (one member per host, on the host's LAN
address), under node faults, etcd faults and a partition.  The hosts, etcd
and nodes are set up once for the module; each test finds every member and
node running and every host on the LAN.

Every node is asked srp's extended resolve every few milliseconds from its
own host (so an isolated host is still heard), and every answer's fencing
token goes to the history checker (L{srp.testing.history.checkFencing}):
at most one node answers as active at any moment, through kill -9 of the
active node and of a passive (each started again), kill -9 of one etcd
member (nothing changes), of two (quorum lost: the answers go on from the
last state, the active steps down, nobody is elected, the nodes say they
are stale), their recovery, and a partition that isolates the active's host.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
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
#: After kill -9 of the active, a successor answers within the lease's TTL
#: and this: etcd's expiry sweep (every 0.5 s), then the revocation's raft
#: commit, the watch event and the successor's campaign, on a busy machine.
TAKEOVER_MARGIN = 1.5


@frozen
class Seen:
    """
    One answer: its fencing claim, how many registrations of SALES it
    listed, and the index of the host whose node gave it.
    """

    claim: Claim
    listed: int
    host: int


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
        """Stop asking (again: nothing more); every answer kept."""
        self._running = False
        self._thread.join()
        for sock in self.sockets:
            sock.close()
        return self.snapshot()

    def snapshot(self, since: float = 0.0) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.claim.sent >= since]

    def latest(self, host: int, since: float = 0.0) -> Seen | None:
        """The last answer of the node on C{hosts[host]}, if asked for since C{since}."""
        address = self.hosts[host].address
        with self.lock:
            seen = self._latest.get(address)
        return seen if seen is not None and seen.claim.sent >= since else None

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
                                  envelope.epoch), len(message.registrations), n)
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


class Fleet:
    """The module's hosts, their etcd members, the cluster's key and each host's node."""

    def __init__(self, hosts: Sequence[Host], directory: Path) -> None:
        self.hosts = hosts
        self.keyFile = writeKeyFile(directory / "cluster.key")
        self.etcd = EtcdCluster(directory=directory, hosts=hosts)
        self.nodes: list[NodeProcess] = []
        self.directory = directory

    def start(self) -> Fleet:
        """Start etcd, then one node on each host."""
        self.etcd.start()
        for n, host in enumerate(self.hosts):
            config = writeNodeConfig(
                self.directory / f"node{n}.toml", [host.address],
                [{"name": "SALES", "tcp": 50000 + n, "check": "none"}],
                tables={"cluster": {"name": CLUSTER, "backend": "etcd",
                                    "etcd": self.etcd.endpoints, "lease_ttl": TTL,
                                    "key_file": str(self.keyFile)}})
            self.nodes.append(NodeProcess(config, self.directory / f"node{n}.log",
                                          prefix=host.command()).start())
        return self

    def restore(self) -> None:
        """Put back what a test left broken: every host on the LAN, every member and node up."""
        for host in self.hosts:
            host.mend()
        self.etcd.revive()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                node.start()

    def stop(self) -> None:
        """Stop every node, then etcd, by their PIDs."""
        for node in self.nodes:
            node.stop()
        self.etcd.stop()


@pytest.fixture(scope="module")
def lanFleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three hosts, etcd and nodes for the module's tests; all ended by PID at its end."""
    with lan(3) as hosts:
        made = Fleet(hosts, tmp_path_factory.mktemp("fleet"))
        try:
            yield made.start()
        finally:
            made.stop()


@pytest.fixture
def fleet(lanFleet: Fleet) -> Fleet:
    """The module's fleet, whole again whatever the test before left."""
    lanFleet.restore()
    return lanFleet


def everywhere(recorder: Recorder, hosts: Sequence[int] = (0, 1, 2), listed: int = 3,
               since: float = 0.0) -> bool:
    """Whether the node of each of C{hosts} answered, since C{since}, listing C{listed}."""
    return all((s := recorder.latest(n, since)) is not None and s.listed == listed
               for n in hosts)


def kill(node: NodeProcess) -> float:
    """
    kill -9 of C{node} (by its PID): when it was dead (reaped), so that no
    answer to a request sent since can be its.
    """
    os.kill(node.pid, signal.SIGKILL)
    node.stop()
    return time.monotonic()


def restart(fleet: Fleet, recorder: Recorder, host: int) -> Seen:
    """
    Start the node of C{fleet.hosts[host]} again: its first answer once
    every node lists all three registrations again.
    """
    fleet.nodes[host].start()
    back = time.monotonic()
    waitUntil(lambda: everywhere(recorder, since=back), 10, "every node to list all three again")
    seen = recorder.latest(host, back)
    assert seen is not None
    return seen


def holders(recorder: Recorder, since: float) -> list[tuple[int, int]]:
    """The token and node of every active the answers asked for since C{since} show."""
    return [(r.token, r.node) for r in reigns(recorder, since)]


def longestSilence(recorder: Recorder, host: int, since: float) -> float:
    """The longest time without an answer from C{host}'s node since C{since}, until now."""
    times = [since] + [s.claim.received for s in recorder.snapshot(since) if s.host == host]
    return max(b - a for a, b in itertools.pairwise([*times, time.monotonic()]))


def test_killedNodes(fleet: Fleet) -> None:
    """
    kill -9 of the active node: the other nodes answer on; one of them is
    elected within the lease's TTL (and a margin), with a larger token; the
    killed node's registration leaves every answer, and the node, started
    again, joins as a passive.  kill -9 of a passive: the same active
    answers on; it too comes back as a passive.  At no moment do two nodes
    answer as active, and each new active's token is larger.
    """
    watch = Recorder(fleet.hosts, loadKey(fleet.keyFile)).start()
    try:
        waitUntil(lambda: everywhere(watch) and activeHost(watch) is not None, 10,
                  "every node to list all three, and one active")
        active = activeHost(watch)
        assert active is not None
        [first] = reigns(watch)

        # kill -9 of the active: a successor on another host, soon.
        others = [n for n in range(3) if n != active]
        killed = kill(fleet.nodes[active])
        waitUntil(lambda: bool(reigns(watch, killed)), 10, "a new active")
        waitUntil(lambda: everywhere(watch, others, listed=2, since=killed), 10,
                  "the killed node's registration to leave the answers")
        [second] = reigns(watch, killed)
        assert second.node != first.node and second.token > first.token
        assert second.first - killed < TTL + TAKEOVER_MARGIN
        assert max(longestSilence(watch, n, killed) for n in others) < TTL

        # Started again, it joins as a passive.
        assert restart(fleet, watch, active).claim.token == 0
        assert holders(watch, killed) == [(second.token, second.node)]

        # kill -9 of a passive: the same active answers on.
        leader = activeHost(watch)
        assert leader is not None
        passive = next(n for n in range(3) if n != leader)
        killed = kill(fleet.nodes[passive])
        waitUntil(lambda: everywhere(watch, [n for n in range(3) if n != passive], listed=2,
                                     since=killed), 10,
                  "the passive's registration to leave the answers")
        assert holders(watch, killed) == [(second.token, second.node)]
        assert longestSilence(watch, leader, killed) < TTL
        assert restart(fleet, watch, passive).claim.token == 0
        assert holders(watch, killed) == [(second.token, second.node)]
        report = checkFencing([s.claim for s in watch.stop()])
        assert report.ok, report
        assert [(r.token, r.node) for r in sorted(report.reigns, key=lambda r: r.first)] == [
            (first.token, first.node), (second.token, second.node)]
    finally:
        watch.stop()


def test_partition_and_quorum(fleet: Fleet) -> None:
    """
    kill -9 of one etcd member: the same active, the same answers; of a
    second (quorum lost): the answers go on from the last state, the active
    steps down and nobody is elected, the nodes say stale; the members
    return and one node is elected with a larger token; the active's host
    is cut off: it stops answering as active before another starts.  At no
    moment do two nodes answer as active.
    """
    hosts, etcd, keyFile, nodes = fleet.hosts, fleet.etcd, fleet.keyFile, fleet.nodes
    watch = Recorder(hosts, loadKey(keyFile)).start()
    try:
        waitUntil(lambda: everywhere(watch) and activeHost(watch) is not None, 10,
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
        report = checkFencing([s.claim for s in watch.stop()])
        assert report.ok, report
        assert report.answers > 1000
    finally:
        watch.stop()
