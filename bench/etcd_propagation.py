"""
C{etcd_propagation}: how soon a registration change reaches every node's
answers, in a cluster of real C{srp serve} processes on a real three-member
etcd (C{backend = "etcd"}), with enough simulated nodes (L{srp.testing.fleet},
each with its own lease and its own watch of the cluster's prefix, in one
process) that 100 nodes watch in all; C{etcd_takeover}: kill -9 of the leader of
three nodes sharing one address (C{answer = "leader"}, lease TTL 1 s), and
the time to the next answer.

Each trial puts one registration into etcd, as a node would, and asks
every node with srp's extended resolve (a Resolve datagram every
millisecond to each node that has not answered with it yet) until all
list it; then deletes it and waits until none does.  A node's latency is
from just before the put to the reply that first lists the registration.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Settings, ms, percentile, summary, verdict, waitUntil
from bench.takeover import WallClock, status
from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.cli import formatTable
from srp.etcd.client import encode
from srp.etcd.keys import ClusterKeys
from srp.records import InstanceInfo, Registration
from srp.testing.etcd import EtcdCluster, post
from srp.testing.fleet import FleetProcess
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire.cluster import Resolve, ResolveReply, clusterId
from srp.wire.fields import encodeRegistration
from srp.wire.mcsqlr import BROWSER_PORT

CLUSTER = "benchetcd"
#: How many nodes watch the cluster's prefix in all, real and simulated.
WATCHING = 100
#: Target: 99th percentile of the per-node latency, in seconds.
TARGET_P99 = 0.1
#: The node id the benchmark's registrations claim.
WRITER = 0xBE7C4


def seen(addresses: list[str], instance: str, present: bool, start: float,
         timeout: float = 5.0) -> dict[str, float]:
    """
    Ask every address for C{instance} until each answers with it listed
    (C{present}) or not: the seconds from C{start} to each one's first such reply.
    """
    auth = ClusterAuthenticator(WallClock(), clusterId(CLUSTER), randomNodeId())
    waiting = set(addresses)
    found: dict[str, float] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.001)
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes {sorted(waiting)} never showed {instance} "
                                   f"{'present' if present else 'gone'}")
            for address in waiting:
                sock.sendto(auth.seal(Resolve(instance), 0), (address, BROWSER_PORT))
            try:
                while True:
                    datagram, source = sock.recvfrom(65535)
                    try:
                        message = auth.open(datagram, source[0]).message
                    except Rejected:
                        continue
                    if (isinstance(message, ResolveReply) and source[0] in waiting
                            and bool(message.registrations) == present):
                        found[source[0]] = time.monotonic() - start
                        waiting.discard(source[0])
            except TimeoutError:
                pass
    return found


def spread(values: list[float]) -> dict[str, float]:
    """L{summary} of C{values} with their 99th percentile."""
    return summary(values) | {"p99": percentile(values, 0.99)}


def etcd_propagation(settings: Settings) -> dict[str, Any]:
    """A registration change reaching every node's answers: per-node latency."""
    count = 3 if settings.quick else 10
    simulated = 0 if settings.quick else WATCHING - count
    keys = ClusterKeys(CLUSTER)
    nodes: list[NodeProcess] = []
    fleet: list[FleetProcess] = []
    added: list[float] = []
    removed: list[float] = []
    slowest: list[float] = []
    with tempfile.TemporaryDirectory(prefix="srp-bench-etcd-") as scratch, \
            EtcdCluster(size=3) as etcd:
        directory = Path(scratch)
        try:
            for n in range(count):
                config = writeNodeConfig(
                    directory / f"node{n}.toml", [freeLoopbackAddress()],
                    [{"name": f"N{n}", "tcp": 50000 + n, "check": "none"}],
                    tables={"cluster": {"name": CLUSTER, "backend": "etcd",
                                        "etcd": etcd.endpoints, "lease_ttl": 1}})
                nodes.append(NodeProcess(config, directory / f"node{n}.log").start())
            if simulated:
                watchers = FleetProcess(etcd.endpoints, CLUSTER, simulated, 10, watch=True)
                fleet.append(watchers.start())
            addresses = [node.address for node in nodes]
            for trial in range(settings.trials):
                name = f"MOVED{trial}"
                registration = Registration(InstanceInfo("BENCH", name, tcp=40000 + trial),
                                            nodeId=WRITER)
                key = encode(keys.registration(WRITER, registration.key))
                start = time.monotonic()
                post(etcd.endpoints[trial % 3], "/v3/kv/put",
                     {"key": key, "value": encode(encodeRegistration(registration))})
                times = seen(addresses, name, True, start)
                added += times.values()
                slowest.append(max(times.values()))
                start = time.monotonic()
                post(etcd.endpoints[trial % 3], "/v3/kv/deleterange", {"key": key})
                removed += seen(addresses, name, False, start).values()
        finally:
            for watchers in fleet:
                watchers.stop()
            for node in nodes:
                node.stop()
    result: dict[str, Any] = {
        "nodes": count, "simulated": simulated, "trials": settings.trials,
        "added": spread(added), "removed": spread(removed), "slowest_node": spread(slowest),
        "target_p99": TARGET_P99}
    print(formatTable(
        ["CHANGE", "SAMPLES", "MEDIAN", "P99", "MAX"],
        [[what, str(len(values)), ms(result[key]["median"]), ms(result[key]["p99"]),
          ms(result[key]["max"])]
         for what, key, values in (("registered (each node)", "added", added),
                                   ("registered (last node)", "slowest_node", slowest),
                                   ("removed (each node)", "removed", removed))]))
    ok = result["added"]["p99"] < TARGET_P99 and result["removed"]["p99"] < TARGET_P99
    print(f"\n{count} real nodes answering, {count + simulated} watching: p99 "
          f"{ms(result['added']['p99'])} to register, "
          f"{ms(result['removed']['p99'])} to remove ({verdict(ok)} the "
          f"{ms(TARGET_P99)} target)")
    return result


#: The lease TTL of etcd_takeover, in seconds.
TAKEOVER_TTL = 1
#: Target of etcd_takeover: the median time from kill -9 to the next answer.
TAKEOVER_MEDIAN = 1.5


def answeringPort(address: str, timeout: float = 0.005) -> int | None:
    """The tcp port of SALES in a plain [MC-SQLR] answer at C{address}, if one comes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"\x04SALES\x00", (address, BROWSER_PORT))
        try:
            reply = sock.recv(65535)
        except TimeoutError:
            return None
    fields = reply[3:].decode("ascii", "replace").split(";")
    return int(fields[fields.index("tcp") + 1]) if "tcp" in fields else None


def nodeIdOf(node: NodeProcess) -> str:
    """The node id a running node logged when it started."""
    found = re.search(r"srp node ([0-9a-f]{16}) started", node.log())
    if found is None:
        raise RuntimeError(f"no node id in {node.logPath}")
    return found.group(1)


def etcd_takeover(settings: Settings) -> dict[str, Any]:
    """
    kill -9 of the elected leader holding a shared port: time to the next
    answer (nobody holds the port until a successor is elected and binds it).
    """
    address = freeLoopbackAddress()
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="srp-bench-etcd-") as scratch, \
            EtcdCluster(size=3) as etcd:
        directory = Path(scratch)
        nodes = [NodeProcess(writeNodeConfig(
            directory / f"node{n}.toml", [address],
            [{"name": "SALES", "tcp": 50000 + n, "priority": n, "check": "none"}],
            tables={"cluster": {"name": CLUSTER, "backend": "etcd", "etcd": etcd.endpoints,
                                "lease_ttl": TAKEOVER_TTL, "answer": "leader"}}),
            directory / f"node{n}.log") for n in range(3)]
        try:
            for node in nodes:
                node.start()
            for _ in range(settings.trials):
                waitUntil(lambda: answeringPort(address) is not None, 10, "an answer")
                # Only the leader holds the port: the node that answers status.
                leaderId = status(address, CLUSTER)["node"]
                leader = next(n for n in nodes if nodeIdOf(n) == leaderId)
                os.kill(leader.pid, signal.SIGKILL)
                start = time.monotonic()
                assert leader.process is not None
                leader.process.wait()
                waitUntil(lambda: answeringPort(address) is not None, 10, "a new leader",
                          step=0.001)
                times.append(time.monotonic() - start)
                if status(address, CLUSTER)["node"] == leaderId:
                    raise RuntimeError("the killed leader still answers")
                leader.start()
        finally:
            for node in nodes:
                node.stop()
    result: dict[str, Any] = {"ttl": TAKEOVER_TTL, "takeover": spread(times),
                              "target_median": TAKEOVER_MEDIAN}
    print(formatTable(["TRIALS", "MEDIAN", "P90", "MAX"],
                      [[str(len(times)), ms(result["takeover"]["median"]),
                        ms(result["takeover"]["p90"]), ms(result["takeover"]["max"])]]))
    ok = result["takeover"]["median"] < TAKEOVER_MEDIAN
    print(f"\nkill -9 of the leader, lease TTL {TAKEOVER_TTL} s: median "
          f"{ms(result['takeover']['median'])} to the next answer ({verdict(ok)} the "
          f"{ms(TAKEOVER_MEDIAN)} target)")
    return result

