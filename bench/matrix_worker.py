"""
The reactor side of the fault matrix (L{bench.matrix}), a process of its own:

    python -m bench.matrix_worker --trials 1 [--topology primary-active ...]
                                  [--fault "kill -9 server" ...] [--naming named ...]

A topology is a set of real processes: the instance ECHO served by two echo
servers (L{srp.testing.echo}), A the primary and B the standby, each a
process of its own, registered by two C{srp serve} nodes (priority 0 and
1, default C{tcp} health checks).  An application on srp's public API
(C{clientFromString(reactor, "srp:ADDRESS/ECHO...")} and a
L{FailoverClient}) sends a numbered line every 10 ms and resends what is
unanswered after 200 ms; each cell applies one fault to A or its node,
waits for the application to be answered by B, and checks the run's
history (L{srp.testing.history}).  Then it undoes the fault and waits for
the cluster to answer with A again, for the next cell.

It ends every process it started by its PID (also on errors), reports
progress on stderr and prints one line C{RESULT <json>} on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint

from bench.client_worker import progress, sleep, until
from bench.common import runWorkerMain
from srp.client.endpoint import sharedResolver
from srp.client.failover import DEFAULT_ANSWER_TIMEOUT, FailoverClient
from srp.client.resolver import ClusterResolver
from srp.clusterkey import loadKey
from srp.testing.echo import EchoProcess
from srp.testing.history import checkHistory
from srp.testing.load import LineRequester
from srp.testing.netns import Host
from srp.testing.processes import (
    NodeProcess,
    ProxyProcess,
    freeLoopbackAddress,
    freeTCPPort,
    writeKeyFile,
    writeNodeConfig,
)

#: Where the primary's node is (the cluster's active, or a passive), and
#: whether each server is a process of its own beside its node or the node
#: serves the instance itself (C{examples/echo_node.py}, as the README shows).
TOPOLOGIES = ("primary-active", "standby-active", "embedded/primary-active",
              "embedded/standby-active", "three-hosts")
#: Whether the client names the cluster (C{:cluster=NAME}) or not.
NAMINGS = ("named", "unnamed")
#: How the application reaches ECHO: the C{srp:} endpoint, or C{srp proxy}.
PATHS = ("srp:", "proxy")
#: Each fault: whom it hits (A's server or A's node) and how.
FAULTS = {
    "kill -9 server": ("server", signal.SIGKILL),
    "kill -9 node": ("node", signal.SIGKILL),
    "SIGSTOP server": ("server", signal.SIGSTOP),
    "SIGSTOP server, answerTimeout=0.25": ("server", signal.SIGSTOP),
    "SIGSTOP node": ("node", signal.SIGSTOP),
    "server stops": ("server", signal.SIGTERM),
    "graceful stop of node": ("node", signal.SIGTERM),
    "partition of the primary's host": ("host", None),
}
CLUSTER = "matrix"
ECHO_NODE = Path(__file__).resolve().parent.parent / "examples" / "echo_node.py"
#: Requests per second the application sends, and its resend delay.
RATE, RETRY = 100.0, 0.2
#: How long a cell waits for the application to be answered by B.
MOVE_TIMEOUT = 6.0
#: Every process started, ended by PID at exit.
STARTED: list[NodeProcess] = []


def running(process: NodeProcess) -> bool:
    return process.process is not None and process.process.poll() is None


def start(process: NodeProcess) -> NodeProcess:
    STARTED.append(process)
    return process.start()


def stopAll() -> None:
    for process in STARTED:
        if running(process):
            os.kill(process.pid, signal.SIGCONT)
        process.stop()


@define
class Topology:
    """
    Servers A (primary) and B (standby) of ECHO and their nodes.

    On one host (C{lan} empty) everything shares a free loopback address;
    C{activeFirst} says whose node starts first and so is the cluster's
    active.  With C{embedded}, each node serves its instance itself: a
    fault of the server is one of the node.  On three hosts (C{lan}: three
    network namespaces, the worker in a fourth), A and its node are on the
    first, B and its node on the second, and a third node (registering
    another instance) on the third; A's node starts first.
    """

    directory: Path
    activeFirst: str = "primary"
    embedded: bool = False
    lan: Sequence[Host] = ()
    address: str = ""
    servers: dict[str, NodeProcess] = field(factory=dict)
    nodes: dict[str, NodeProcess] = field(factory=dict)
    ports: dict[str, int] = field(factory=dict)
    keyFile: Path | None = None

    @classmethod
    def named(cls, directory: Path, name: str, lan: Sequence[Host]) -> Topology:
        """The topology called C{name} (one of L{TOPOLOGIES})."""
        directory.mkdir()
        if name == "three-hosts":
            keyFile = writeKeyFile(directory / "cluster.key")
            return cls(directory, lan=lan, address="lan", keyFile=keyFile)
        embedded, _, where = name.rpartition("/")
        return cls(directory, where.split("-")[0], embedded=bool(embedded),
                   address=freeLoopbackAddress())

    @property
    def faults(self) -> tuple[str, ...]:
        """The faults that differ in this topology."""
        return tuple(f for f, (target, _) in FAULTS.items()
                     if not (self.embedded and target == "node")
                     and (target != "host" or self.lan))

    @property
    def addresses(self) -> list[str]:
        """The cluster's addresses."""
        return [h.address for h in self.lan] if self.lan else [self.address]

    def hostOf(self, name: str) -> tuple[str, Sequence[str]]:
        """The address of C{name} (A, B or C) and the command prefix that runs there."""
        if not self.lan:
            return self.address, ()
        host = self.lan["ABC".index(name)]
        return host.address, host.command()

    def proxy(self, named: bool, timeout: float) -> ProxyProcess:
        """
        An C{srp proxy} for ECHO, as a driver's way in, verifying with hello
        within C{timeout} seconds.
        """
        listen = f"127.0.0.1:{freeTCPPort('127.0.0.1')}"
        options = ["--verify", "hello", "--timeout", str(timeout)]
        if named:
            options += ["--cluster", CLUSTER]
        if self.lan:
            options += ["--cluster-addresses", ",".join(self.addresses),
                        "--key-file", str(self.keyFile)]
        return ProxyProcess(listen, f"{self.address}/ECHO", self.directory / "proxy.log",
                            *options)

    def endpoint(self, named: bool) -> str:
        """The application's C{srp:} endpoint string."""
        description = f"srp:{self.address}/ECHO:verify=hello:timeout=0.5"
        if self.lan:
            description += f":addresses={','.join(self.addresses)}:key_file={self.keyFile}"
        return description + (f":cluster={CLUSTER}" if named else "")

    def server(self, name: str) -> NodeProcess:
        if self.embedded:
            return self.node(name)
        address, prefix = self.hostOf(name)
        server = EchoProcess(self.directory / f"server-{name}.log", address, name,
                             port=self.ports.get(name, 0), prefix=tuple(prefix))
        start(server)
        self.ports[name] = server.port
        self.servers[name] = server
        return server

    def node(self, name: str) -> NodeProcess:
        address, prefix = self.hostOf(name)
        if self.embedded:
            node = start(NodeProcess(
                self.directory / "none.toml", self.directory / f"node-{name}.log",
                argv=[sys.executable, str(ECHO_NODE), "--listen", address, "--name",
                      name, "--priority", str("AB".index(name)), "--instance", "ECHO",
                      "--cluster", CLUSTER]))
            self.nodes[name] = self.servers[name] = node
            return node
        instance = ({"name": "ECHO", "tcp": self.ports[name], "priority": "AB".index(name)}
                    if name in "AB" else {"name": "OTHER", "tcp": 1, "check": "none"})
        cluster: dict[str, Any] = {"name": CLUSTER}
        if self.lan:
            cluster |= {"addresses": self.addresses, "key_file": str(self.keyFile)}
        config = writeNodeConfig(self.directory / f"node-{name}.toml", [address], [instance],
                                 serverName=f"HOST{name}", tables={"cluster": cluster})
        node = start(NodeProcess(config, self.directory / f"node-{name}.log",
                                 prefix=prefix))
        self.nodes[name] = node
        return node

    async def start(self, reactor: Any) -> None:
        for name in "AB" if not self.embedded else "":
            self.server(name)
        first, *others = list(("AB" if self.activeFirst == "primary" else "BA")
                              + ("C" if self.lan else ""))
        self.node(first)
        await until(reactor, lambda: "Active for cluster" in self.nodes[first].log(), 30.0,
                    f"node {first} to become active", step=0.05)
        for name in others:
            self.node(name)
        await self.settled(reactor)

    def stop(self) -> None:
        """End every process of this topology, by its PID."""
        for process in {*self.servers.values(), *self.nodes.values()}:
            if running(process):
                os.kill(process.pid, signal.SIGCONT)
            process.stop()

    async def settled(self, reactor: Any) -> None:
        """Wait until the cluster answers with A first and alive, B next."""
        key = b"" if self.keyFile is None else loadKey(str(self.keyFile))
        probe = ClusterResolver(reactor, clusterName=CLUSTER, timeout=0.5, key=key)

        async def answers() -> bool:
            probe.purge(self.address, "ECHO")
            try:
                found = await probe.resolve(self.address, "ECHO", self.addresses)
            except Exception:
                return False
            return [(c.info.serverName, c.down) for c in found.candidates] == [
                ("HOSTA", False), ("HOSTB", False)]

        deadline = reactor.seconds() + 15.0
        while not await answers():
            if reactor.seconds() > deadline:
                raise RuntimeError("the cluster did not answer with A then B within 15 s")
            await sleep(reactor, 0.1)

    def fault(self, fault: str) -> None:
        """Apply C{fault} to A's server, A's node or A's host."""
        target, signum = FAULTS[fault]
        if target == "host":
            self.lan[0].cut()
        else:
            assert signum is not None
            os.kill((self.servers if target == "server" else self.nodes)["A"].pid, signum)

    async def undo(self, reactor: Any, fault: str) -> None:
        """
        Mend, wake or restart A's host, server and node; wait until the
        cluster answers.  A process the fault ended is first waited for: a
        graceful stop can outlast the cell on a loaded machine.
        """
        if self.lan:
            self.lan[0].mend()
        target, signum = FAULTS[fault]
        if signum in (signal.SIGTERM, signal.SIGKILL):
            ended = (self.servers if target == "server" else self.nodes)["A"]
            await until(reactor, lambda: not running(ended), 10.0, f"A's {target} to end")
        for process, restart in [(self.servers["A"], self.server), (self.nodes["A"], self.node)]:
            if running(process):
                os.kill(process.pid, signal.SIGCONT)
            elif not (self.embedded and restart == self.node):
                restart("A")
        await self.settled(reactor)


async def runCell(reactor: Any, topology: Topology, named: bool, path: str,
                  fault: str) -> dict[str, Any]:
    """
    One cell: the application on A, the fault, the move to B, the history
    checked.  Through C{srp proxy}, the application is a plain TCP client
    of a proxy of its own that reconnects when its connection closes or
    goes silent, as a driver's pool does.
    """
    _, _, setting = fault.partition("answerTimeout=")
    answerTimeout = float(setting) if setting else DEFAULT_ANSWER_TIMEOUT
    proxy: ProxyProcess | None = None
    endpoint: IStreamClientEndpoint
    if path == "proxy":
        proxy = topology.proxy(named, 0.5)
        start(proxy)
        endpoint = TCP4ClientEndpoint(reactor, proxy.address, proxy.port)
    else:
        # Each cell is a new application: nothing cached from the last one
        # (an endpoint string with a key file shares the resolver of that key).
        key = b"" if topology.keyFile is None else loadKey(str(topology.keyFile))
        for name in (None, CLUSTER):
            sharedResolver(reactor, clusterName=name, key=key).purge(topology.address, "ECHO")
        endpoint = clientFromString(reactor, topology.endpoint(named))
    requester = LineRequester(reactor, rate=RATE, retry=RETRY)
    client = FailoverClient(reactor, endpoint, requester, deadline=10.0,
                            answerTimeout=answerTimeout)
    try:
        await client.connect()
        await until(reactor, lambda: len(requester.answers) >= 20, 5.0, "answers from A")
        if requester.servers() != ["A"]:
            raise RuntimeError(f"the application started on {requester.servers()}, not A")
        faultAt = reactor.seconds()
        topology.fault(fault)
        moved = FAULTS[fault][0] != "node"  # a fault of a node leaves A's server serving
        if moved:
            await until(reactor, lambda: any(a.place == "B" and a.at > faultAt
                                             for a in requester.history),
                        MOVE_TIMEOUT, "the application to be answered by B")
        await sleep(reactor, 0.5)
        end = reactor.seconds()
        report = checkHistory(requester.sent, requester.history, faultAt, end)
        return {"lost": len(report.lost), "stale": len(report.stale),
                "duplicated": report.duplicated, "longest_gap_s": report.longestGap,
                "places": list(report.places), "failovers": client.failovers,
                "moved": moved, "app_lost": requester.lost is not None,
                "ok": report.ok and requester.lost is None}
    finally:
        await client.close()
        if proxy is not None:
            proxy.stop()


async def matrix(reactor: Any, options: argparse.Namespace, directory: Path) -> dict[str, Any]:
    rows = []
    for topologyName in options.topology:
        topology = await fresh(reactor, directory, topologyName, options.lan)
        for trial in range(options.trials):
            paths = [p for p in options.path
                     if p != "proxy" or not options.proxy_in or topologyName in options.proxy_in]
            for naming, path, fault in itertools.product(
                    options.naming, paths, [f for f in options.fault if f in topology.faults]):
                cell = {"topology": topologyName, "naming": naming, "path": path,
                        "fault": fault, "trial": trial + 1}
                try:
                    cell |= await runCell(reactor, topology, naming == "named", path,
                                          fault)
                except Exception as e:  # a broken cell is a result, not the end
                    cell |= {"ok": False, "error": f"{type(e).__name__}: {e}"}
                progress(f"fault_matrix: {json.dumps(cell)}")
                rows.append(cell)
                try:
                    await topology.undo(reactor, fault)
                except RuntimeError as e:
                    # Not the cell's result: its figures are in.  The next
                    # cells need a topology that answers, so start it anew.
                    progress(f"fault_matrix: {topologyName} started anew after "
                             f"{cell['fault']!r}: {e}")
                    topology.stop()
                    topology = await fresh(reactor, directory, topologyName, options.lan)
        topology.stop()
    return {"rows": rows}


async def fresh(reactor: Any, directory: Path, name: str, lan: Sequence[Host]) -> Topology:
    """The topology C{name}, started in a directory of its own (a fresh address too)."""
    base = directory / name.replace("/", "-")
    place, n = base, 1
    while place.exists():
        place, n = base.with_name(f"{base.name}-{n}"), n + 1
    topology = Topology.named(place, name, lan)
    await topology.start(reactor)
    return topology


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.matrix_worker")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--topology", action="append", choices=TOPOLOGIES)
    parser.add_argument("--naming", action="append", choices=NAMINGS)
    parser.add_argument("--path", action="append", choices=PATHS)
    parser.add_argument("--proxy-in", action="append", choices=TOPOLOGIES,
                        help="the topologies whose cells also run through srp proxy "
                             "(default: every one)")
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS))
    parser.add_argument("--lan", type=json.loads, default=[],
                        help="the hosts of three-hosts: JSON, a list of Host fields")
    options = parser.parse_args(argv)
    options.lan = [Host(**fields) for fields in options.lan]
    if "three-hosts" in (options.topology or ()) and len(options.lan) != 3:
        parser.error("three-hosts needs --lan with three hosts (bench.matrix.runMatrix "
                     "makes them)")
    options.topology = options.topology or [
        t for t in TOPOLOGIES if options.lan or t != "three-hosts"]
    options.naming = options.naming or list(NAMINGS)
    options.path = options.path or list(PATHS)
    options.fault = options.fault or list(FAULTS)

    runWorkerMain(lambda reactor, scratch: matrix(reactor, options, scratch), "srp-matrix-",
                  stopAll)


if __name__ == "__main__":
    main()
