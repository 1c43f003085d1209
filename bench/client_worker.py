"""
The reactor side of the client benchmarks (L{bench.client}), run as a process
of its own because a Twisted reactor runs once per process:

    python -m bench.client_worker connect --connects 2000 --rounds 5
    python -m bench.client_worker cold --resolves 1000 --rounds 5
    python -m bench.client_worker failover --trials 20 [--topology "primary's node active"]

Each starts the srp nodes it needs (examples/echo_node.py processes on a
free 127.0.0.N address), measures, ends every node by its PID (also on
errors and on SIGTERM), reports progress on stderr and prints one line
C{RESULT <json>} on stdout.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from bench.common import ROOT, pinTo, runWorkerMain
from srp.client.endpoint import SRPClientEndpoint
from srp.client.failover import FailoverClient
from srp.client.resolver import ClusterResolver, Resolution
from srp.client.verifiers import HelloVerifier, NoVerifier
from srp.testing.load import LineRequester
from srp.testing.processes import NodeProcess, freeLoopbackAddress

ECHO_NODE = ROOT / "examples" / "echo_node.py"
#: Every node this process started, ended by PID when it exits.
STARTED: list[NodeProcess] = []
#: A file to which the PID of every node started is appended (C{--pidfile}),
#: so that the parent can end them should this process be killed outright.
PIDFILE: list[Path] = []
#: CPUs for the nodes and for this process, when pinning.
NODE_CPU, CLIENT_CPU = 0, 1


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def echoNode(directory: Path, address: str, name: str, priority: int, instance: str,
             cluster: str, pin: bool) -> NodeProcess:
    """Start an echo node (blocking until it logs that it started) and pin it."""
    node = NodeProcess(directory / "none.toml", directory / f"{name}.log",
                       argv=[sys.executable, str(ECHO_NODE), "--listen", address,
                             "--name", name, "--priority", str(priority),
                             "--instance", instance, "--cluster", cluster])
    started(node)
    pinTo(node.pid, NODE_CPU if pin else None)
    return node


def started(node: NodeProcess) -> None:
    """Start C{node}, remember it to end it, and note its PID in the pidfile."""
    STARTED.append(node)
    node.start()
    for path in PIDFILE:
        with path.open("a") as pids:
            pids.write(f"{node.pid}\n")


def alive(node: NodeProcess) -> bool:
    return node.process is not None and node.process.poll() is None


def stopAll() -> None:
    """End every node started, by its PID; wake stopped ones first."""
    for node in STARTED:
        if alive(node):
            os.kill(node.pid, signal.SIGCONT)
        node.stop()


async def sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(reactor: Any, predicate: Callable[[], bool], timeout: float, what: str,
                step: float = 0.01) -> None:
    """Poll C{predicate} on the reactor; raise after C{timeout} seconds."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() >= deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await sleep(reactor, step)


async def activeNode(reactor: Any, node: NodeProcess) -> None:
    await until(reactor, lambda: "Active for cluster" in node.log(), 10.0,
                f"{node.logPath.name} to become active", step=0.05)


class Closing(Protocol):
    """Fires C{closed} when the connection is lost."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


# -- connect: cached resolve cost, srp: against TCP4ClientEndpoint -----------

async def connectBenchmark(reactor: Any, options: argparse.Namespace,
                           directory: Path) -> dict[str, Any]:
    address = freeLoopbackAddress()
    cluster = "benchclient"
    # Not examples/echo_node.py: its listen backlog of 50 overflows (see there).
    node = NodeProcess(directory / "none.toml", directory / "server.log",
                       argv=[sys.executable, str(ROOT / "bench" / "connect_server.py"),
                             "--listen", address, "--instance", "BENCH", "--cluster", cluster])
    started(node)
    pinTo(node.pid, NODE_CPU if options.pin else None)
    await activeNode(reactor, node)
    resolver = ClusterResolver(reactor, clusterName=cluster, ttl=3600.0)
    first: Resolution = await resolver.resolve(address, "BENCH")
    port = first.candidates[0].info.tcp
    assert port is not None

    # Warm-cache resolve, in-process: every call is answered from the cache.
    warm = await resolver.resolve(address, "BENCH")
    assert warm.cached, "the second resolve did not come from the cache"
    calls = options.resolves
    resolveCosts, succeedCosts = [], []
    for _ in range(options.rounds):
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            resolver.resolve(address, "BENCH")
        resolveCosts.append((time.perf_counter() - start) / calls)
        start = time.perf_counter()
        for _ in range(calls):
            succeed(first)
        succeedCosts.append((time.perf_counter() - start) / calls)

    endpoints: dict[str, IStreamClientEndpoint] = {
        "tcp4": TCP4ClientEndpoint(reactor, address, port, timeout=2),
        "srp-none": SRPClientEndpoint(reactor, address, "BENCH", resolver,
                                      verifier=NoVerifier(), timeout=2),
        "srp-hello": SRPClientEndpoint(reactor, address, "BENCH", resolver,
                                       verifier=HelloVerifier(reactor), timeout=2),
    }
    factory = Factory.forProtocol(Closing)

    async def connectOnce(endpoint: IStreamClientEndpoint) -> int:
        protocol: IProtocol = await endpoint.connect(factory)
        assert isinstance(protocol, Closing)
        transport: Any = protocol.transport
        peerPort: int = transport.getPeer().port
        transport.loseConnection()
        await protocol.closed
        return peerPort

    for endpoint in endpoints.values():  # warm up every path
        for _ in range(50):
            assert await connectOnce(endpoint) == port
    rounds: list[dict[str, Any]] = []
    names = list(endpoints)
    for number in range(options.rounds):
        # Rotate the order, so that no kind always runs first or last.
        order = names[number % len(names):] + names[:number % len(names)]
        for name in order:
            gc.collect()
            slowest, slow = 0.0, 0
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(options.connects):
                began = time.perf_counter()
                await connectOnce(endpoints[name])
                took = time.perf_counter() - began
                slowest = max(slowest, took)
                slow += took > 0.1
            rounds.append({"round": number + 1, "endpoint": name,
                           "wall_s": time.perf_counter() - wall,
                           "cpu_s": time.process_time() - cpu, "connects": options.connects,
                           "slowest_s": slowest, "over_100ms": slow})
        progress(f"cached_resolve: round {number + 1}/{options.rounds} done")
    return {"resolve_us": [c * 1e6 for c in resolveCosts],
            "succeed_us": [c * 1e6 for c in succeedCosts], "resolve_calls": calls,
            "port": port, "rounds": rounds}


# -- cold: concurrent resolves of a name not in the cache -------------------------

async def coldBenchmark(reactor: Any, options: argparse.Namespace,
                        directory: Path) -> dict[str, Any]:
    cluster = "benchcold"
    address = freeLoopbackAddress()
    node = echoNode(directory, address, "C", 0, "COLD", cluster, options.pin)
    await activeNode(reactor, node)
    # Two more cluster addresses where nothing listens.
    last = int(address.rsplit(".", 1)[1])
    others = [freeLoopbackAddress(first=last + 1)]
    others.append(freeLoopbackAddress(first=int(others[0].rsplit(".", 1)[1]) + 1))
    addresses = [address, *others]
    rows = []
    for number in range(options.rounds):
        for dialect in ("unknown", "known"):
            resolver = ClusterResolver(reactor, clusterName=cluster)
            if dialect == "known":
                # The cluster answered before: only the extended request goes out.
                resolver.dialects[cluster] = "extended"
            start = reactor.seconds()
            results = await gatherResults([resolver.resolve(cluster, "COLD", addresses)
                                           for _ in range(options.resolves)])
            took = reactor.seconds() - start
            ok = sum(isinstance(r, Resolution) and r.candidates[0].host == address
                     for r in results)
            rows.append({"round": number + 1, "dialect": dialect, "resolves": len(results),
                         "correct": ok, "sent": resolver.sent, "seconds": took,
                         "answered_in": resolver.dialects.get(cluster)})
            await sleep(reactor, 0.1)  # let every retry timer of the round go
    return {"addresses": addresses, "node_address": address, "rows": rows}


# -- failover: kill -9 and SIGSTOP of the primary under a LineRequester -----------

async def failoverTrial(reactor: Any, address: str, cluster: str, fault: str,
                        primary: NodeProcess) -> dict[str, Any] | None:
    """One fault; None if the client did not start on A (the trial is repeated)."""
    endpoint = SRPClientEndpoint(reactor, address, "ECHO",
                                 ClusterResolver(reactor, clusterName=cluster),
                                 verifier=HelloVerifier(reactor), timeout=0.5)
    requester = LineRequester(reactor, rate=100)
    client = FailoverClient(reactor, endpoint, requester, deadline=10.0)
    try:
        await client.connect()
        await sleep(reactor, 0.3)
        if requester.servers() != ["A"]:
            return None
        primaryPort = int(client.peer.port)  # type: ignore[attr-defined]
        faultAt = reactor.seconds()
        os.kill(primary.pid, signal.SIGKILL if fault == "kill -9" else signal.SIGSTOP)
        await until(reactor, lambda: client.failovers >= 1
                    and any(name == "B" for _, name in requester.answers.values()), 5.0,
                    "the client to fail over to B")
        await sleep(reactor, 0.3)
        firstB = min(at for at, name in requester.answers.values() if name == "B")
        late = [n for n in requester.unanswered() if requester.sent[n] < reactor.seconds() - 0.5]
        return {"fault": fault, "primary_port": primaryPort,
                "longest_gap_s": requester.longestGap(after=faultAt - 0.1),
                "failover_gap_s": client.gaps[0][1] if client.gaps else None,
                "down_after_s": client.gaps[0][0] - faultAt if client.gaps else None,
                "first_b_s": firstB - faultAt, "servers": requester.servers(),
                "failovers": client.failovers, "lost": len(late),
                "app_lost": requester.lost is not None}
    finally:
        await client.close()


async def registeredAlone(reactor: Any, address: str, cluster: str,
                          oldPorts: Sequence[int]) -> None:
    """Wait until the cluster lists A then B, A on none of C{oldPorts}."""
    probe = ClusterResolver(reactor, clusterName=cluster)

    async def registered() -> bool:
        probe.purge(address, "ECHO")
        try:
            found = await probe.resolve(address, "ECHO")
        except Exception:
            return False
        names = [c.info.serverName for c in found.candidates]
        return names == ["HOSTA", "HOSTB"] and found.candidates[0].info.tcp not in oldPorts

    deadline = reactor.seconds() + 10.0
    while not await registered():
        if reactor.seconds() > deadline:
            raise RuntimeError("the primary A and the standby B were not registered in 10 s")
        await sleep(reactor, 0.05)


def end(node: NodeProcess) -> None:
    """End C{node} by its PID (waking it first if stopped) and forget it."""
    assert node.process is not None
    if node.process.poll() is None:
        os.kill(node.pid, signal.SIGCONT)
        os.kill(node.pid, signal.SIGKILL)
    node.process.wait(10)
    STARTED.remove(node)


#: The set-ups failover_gap measures: which node is the cluster's active.
TOPOLOGIES = ("another node active", "standby's node active", "primary's node active")


async def startTrialNodes(reactor: Any, topology: str, directory: Path, address: str,
                          cluster: str, pin: bool, nodes: list[NodeProcess]) -> NodeProcess:
    """
    Start the nodes of one trial (into C{nodes}, to be ended after it): the
    primary A alone when another node is the active, else A and B afresh,
    the one to be active first.  The primary's node.
    """
    if topology == "another node active":
        nodes.append(echoNode(directory, address, "A", 0, "ECHO", cluster, pin))
        return nodes[0]
    order = [("A", 0), ("B", 1)] if topology == "primary's node active" else [("B", 1), ("A", 0)]
    for name, priority in order:
        nodes.append(echoNode(directory, address, name, priority, "ECHO", cluster, pin))
        if len(nodes) == 1:
            await activeNode(reactor, nodes[0])
    return nodes[0] if order[0][0] == "A" else nodes[1]


async def failoverBenchmark(reactor: Any, options: argparse.Namespace,
                            directory: Path) -> dict[str, Any]:
    cluster = "benchfo"
    address = freeLoopbackAddress()
    rows: list[dict[str, Any]] = []
    faults = ["kill -9", "SIGSTOP"]
    for topology in options.topology or TOPOLOGIES:
        ports: list[int] = []
        standing: list[NodeProcess] = []
        if topology == "another node active":
            # Z serves another instance and starts first: the active, never faulted;
            # B stays, A is started again after each trial.
            z = echoNode(directory, address, "Z", 0, "OTHER", cluster, options.pin)
            await activeNode(reactor, z)
            standing = [z, echoNode(directory, address, "B", 1, "ECHO", cluster, options.pin)]
        for number in range(options.trials * len(faults)):
            fault = faults[number % len(faults)]
            trial = number // len(faults) + 1
            result: dict[str, Any] | None = None
            try:
                for _ in range(3):  # a trial whose client did not start on A is repeated
                    trialNodes: list[NodeProcess] = []
                    try:
                        primary = await startTrialNodes(reactor, topology, directory, address,
                                                        cluster, options.pin, trialNodes)
                        await registeredAlone(reactor, address, cluster, ports)
                        result = await failoverTrial(reactor, address, cluster, fault, primary)
                    finally:
                        for node in trialNodes:
                            end(node)
                    if result is not None:
                        break
                else:
                    raise RuntimeError("the client did not connect to the primary A three times")
            except RuntimeError as e:
                result = {"fault": fault, "error": str(e), "longest_gap_s": None}
            assert result is not None
            rows.append({"topology": topology, "trial": trial} | result)
            gap = result["longest_gap_s"]
            progress(f"failover_gap: {topology}, {fault} trial {trial}/{options.trials}: "
                     + (f"longest gap {gap * 1000:.0f} ms" if gap is not None
                        else result.get("error", "")))
            if "primary_port" in result:
                ports.append(result["primary_port"])
        for node in standing:
            end(node)
    return {"rows": rows}


MODES = {"connect": connectBenchmark, "cold": coldBenchmark, "failover": failoverBenchmark}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client_worker")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--resolves", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--topology", action="append", choices=TOPOLOGIES,
                        help="failover: only this set-up (repeatable; default: all)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--pidfile", type=Path)
    options = parser.parse_args(argv)
    if options.pidfile is not None:
        PIDFILE.append(options.pidfile)
    options.pin = options.pin and len(os.sched_getaffinity(0)) >= 2
    pinTo(os.getpid(), CLIENT_CPU if options.pin else None)

    runWorkerMain(lambda reactor, scratch: MODES[options.mode](reactor, options, scratch),
                  "srp-bench-client-", stopAll)


if __name__ == "__main__":
    main()
