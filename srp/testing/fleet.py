"""
A simulated fleet for scale tests and benchmarks: many etcd-backed nodes'
registrations without as many processes.

C{python -m srp.testing.fleet --etcd URL... --cluster C --nodes 100
--instances 1000} runs, on one reactor, one L{NodeLease} per simulated
node (its own lease, its node key and its registrations, written as a real
node writes them, not campaigning), prints C{ready SECONDS} once every
node's keys are in etcd, and keeps the leases alive until its standard
input closes or it is terminated; with C{--watch}, each also watches the
cluster's prefix as a real node does.  L{FleetProcess} runs it; L{fleetNames}
says which instances it registers; L{resolveAll} asks a real node for
every one of them with srp's extended resolve.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import reactor as wallClock
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.etcd.client import EtcdClient
from srp.etcd.keys import ClusterKeys
from srp.etcd.watch import PrefixMirror
from srp.records import InstanceInfo, Registration
from srp.server.etcdlease import NodeLease
from srp.testing.processes import stopProcess
from srp.wire.cluster import Resolve, ResolveReply, clusterId
from srp.wire.fields import encodeRegistration
from srp.wire.mcsqlr import BROWSER_PORT

#: The node id of simulated node 0 (the others follow).
FIRST_NODE = 0x5EED_0000
#: How many simulated nodes write their registrations at once.
STARTING = 4


def fleetNames(nodes: int, instances: int) -> list[str]:
    """The instance names a fleet of C{nodes} nodes of C{instances} instances registers."""
    return [f"N{node:03d}I{n:04d}" for node in range(nodes) for n in range(instances)]


def fleetValues(cluster: str, node: int, instances: int) -> dict[bytes, bytes]:
    """The keys simulated node number C{node} puts on its lease, as a real node would."""
    keys = ClusterKeys(cluster)
    nodeId = FIRST_NODE + node
    values = {keys.node(nodeId): json.dumps(
        {"addresses": [f"10.{200 + node // 250}.{node % 250}.1"], "port": BROWSER_PORT}
    ).encode()}
    for n in range(instances):
        registration = Registration(
            InstanceInfo(f"HOST{node:03d}", f"N{node:03d}I{n:04d}", tcp=10000 + n),
            nodeId=nodeId)
        values[keys.registration(nodeId, registration.key)] = encodeRegistration(registration)
    return values


def run(reactor: Any, endpoints: Sequence[str], cluster: str, nodes: int, instances: int,
        ttl: int, watch: bool = False) -> None:
    """
    Start the fleet on C{reactor}: print C{ready} when every key is written.
    With C{watch}, each simulated node also watches the cluster's prefix, as
    a real node does (the events are counted, not kept).
    """
    client = EtcdClient(reactor, endpoints, timeout=5.0)
    if watch:
        for _ in range(nodes):
            PrefixMirror(EtcdClient(reactor, endpoints), ClusterKeys(cluster).root,
                         lambda kvs: None, lambda events: None).start()
    leases = []
    for node in range(nodes):
        lease = NodeLease(client, ClusterKeys(cluster), FIRST_NODE + node, ttl,
                          lambda token: None, elect=False)
        lease.set(fleetValues(cluster, node, instances))
        leases.append(lease)
    started = time.monotonic()
    waiting = list(leases)

    def progress() -> None:
        # A few nodes write at a time: one reactor writing for all of them at
        # once would be too busy to keep their leases alive.
        busy = sum(1 for lease in leases[:len(leases) - len(waiting)] if not lease.synced)
        while waiting and busy < STARTING:
            waiting.pop(0).start()
            busy += 1
        if not waiting and all(lease.synced for lease in leases):
            print(f"ready {time.monotonic() - started:.3f}", flush=True)
            watching.stop()

    watching = LoopingCall(progress)
    watching.start(0.02)

    def stop() -> Deferred[Any]:
        return DeferredList([lease.stop() for lease in leases], consumeErrors=True)

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    StandardIO(_Parent(reactor), reactor=reactor)


class _Parent(Protocol):
    """Standard input: when it closes, the parent went away and the fleet stops."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.reactor.running:
            self.reactor.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a simulated fleet (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m srp.testing.fleet")
    parser.add_argument("--etcd", nargs="+", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--watch", action="store_true")
    options = parser.parse_args(argv)
    run(wallClock, options.etcd, options.cluster, options.nodes, options.instances, options.ttl,
        options.watch)
    wallClock.run()
    return 0


class FleetProcess:
    """A simulated fleet in a process of its own (see the module's docstring)."""

    def __init__(self, endpoints: Sequence[str], cluster: str, nodes: int, instances: int,
                 ttl: int = 5, watch: bool = False) -> None:
        self.command = [sys.executable, "-m", "srp.testing.fleet", "--etcd", *endpoints,
                        "--cluster", cluster, "--nodes", str(nodes),
                        "--instances", str(instances), "--ttl", str(ttl),
                        *(["--watch"] if watch else [])]
        self.names = fleetNames(nodes, instances)
        self.process: subprocess.Popen[str] | None = None
        #: Seconds from the fleet's start until every key was in etcd.
        self.written = 0.0

    def start(self, timeout: float = 120.0) -> FleetProcess:
        """Start the fleet and wait until its keys are written; raise if it fails."""
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("ready "):
                    self.written = float(line.split()[1])
                    return self
                if not line and self.process.poll() is not None:
                    break
        output = self.process.stdout.read() if self.process.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"the simulated fleet did not get ready: {output}")

    def stop(self) -> None:
        """End the fleet (its leases are revoked), by its PID."""
        if self.process is not None:
            stopProcess(self.process)


def resolveAll(address: str, cluster: str, names: Iterable[str], timeout: float = 60.0,
               key: bytes = b"", window: int = 500) -> set[str]:
    """
    Ask the node at C{address} for each of C{names} with srp's extended
    resolve, C{window} at a time, again until each is answered with a
    registration or C{timeout} passes: the names never answered so.
    """
    auth = ClusterAuthenticator(wallClock, clusterId(cluster), randomNodeId(), key)
    missing = set(names)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.setblocking(False)
        while missing and time.monotonic() < deadline:
            asked = list(missing)[:window]
            for name in asked:
                sock.sendto(auth.seal(Resolve(name), 0), (address, BROWSER_PORT))
            while select.select([sock], [], [], 0.05)[0]:
                datagram, source = sock.recvfrom(65535)
                try:
                    message = auth.open(datagram, source[0]).message
                except Rejected:
                    continue
                if isinstance(message, ResolveReply) and message.registrations:
                    missing.discard(message.instanceName)
    return missing


if __name__ == "__main__":
    sys.exit(main())
