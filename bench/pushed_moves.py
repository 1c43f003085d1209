"""
C{pushed_moves}: how an application on L{FailoverClient} fares when the
cluster pushes the move to it, against the same application without a push,
in the same run and on the same faults.

    python -m bench.pushed_moves --worker --trials 1   # the reactor side alone

Two echo servers (L{srp.testing.echo}) serve ECHO, A the primary and B the
standby, each registered by an C{srp serve} node of its own, on a UDP
cluster (one shared address) or on a real three-member etcd (lease TTL 1 s,
each node and its server at an address of their own).  Several applications
(L{LineRequester}: a numbered line every 10 ms, resent if unanswered after
200 ms; the echo answers in well under a millisecond, so each connection is
idle most of the time) run side by side, one per way of learning of moves:
C{none} (the baseline), C{subscribe} (C{srp:...:subscribe=yes}, through the
standby's node on etcd) and C{etcd} (C{srp:...:etcd=...}).

The faults, each on a topology of its own:

  - C{graceful stop of node}: SIGTERM to A's node, its server running on;
    one second later A's server stops too (the switchover completes).  A
    pushed move happens in that second; without a push the application
    stays on A until its server goes.
  - C{kill -9 node+server} (etcd): the client's own detection is the
    closed connection, at once.
  - C{SIGSTOP node+server} (etcd): a silent peer; the client's own
    detection is its answer timeout (L{STOP_ANSWER_TIMEOUT}), a pushed one
    the lease's expiry.

For each application: the longest time without an answer after the fault,
requests resent, whether the move was pushed, and whether it happened
before the write that needed it (no write waited for the new connection).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from bench.client_worker import progress, sleep, until
from bench.common import Settings, ms, runWorkerMain, summary, verdict, workerRows
from srp.cli import formatTable
from srp.client.endpoint import SRPClientEndpoint
from srp.client.etcdwatch import EtcdPlaces, WatchEtcd
from srp.client.failover import DEFAULT_ANSWER_TIMEOUT, FailoverClient
from srp.client.resolver import ClusterResolver
from srp.client.subscription import NodeSubscription, SubscribeTo
from srp.testing.echo import EchoProcess
from srp.testing.etcd import EtcdCluster
from srp.testing.history import checkHistory
from srp.testing.load import LineRequester
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig

#: Requests per second each application sends, and its resend delay.
RATE, RETRY = 100.0, 0.2
#: The lease TTL of the etcd cluster, in seconds.
LEASE_TTL = 1
#: The answer timeout of the applications in the second SIGSTOP cell: one
#: for queries that may take a few seconds, so that the client's own
#: detection and the lease's expiry can be told apart (the default, 1 s, is
#: about the lease TTL).
STOP_ANSWER_TIMEOUT = 3.0
#: How long A's server runs on after its node's graceful stop.
SERVER_RUNS_ON = 1.0
#: The cells: (cluster, fault) and the applications of each cluster.
CELLS = [("udp", "graceful stop of node"), ("etcd", "graceful stop of node"),
         ("etcd", "kill -9 node+server"), ("etcd", "SIGSTOP node+server"),
         ("etcd", f"SIGSTOP node+server, answerTimeout={STOP_ANSWER_TIMEOUT:g}")]
KINDS = {"udp": ("none", "subscribe"), "etcd": ("none", "subscribe", "etcd")}
#: Target of a pushed graceful switchover: "gap 0", that is the longest
#: time without an answer after the stop at most one request interval
#: longer than the longest in as long a window just before it (answers
#: come every interval anyway, with the machine's jitter); nothing resent
#: or lost; every move before its write.
EXTRA_GAP = 1.0 / RATE
#: Topologies started for one cell before its failure to start is its result.
START_ATTEMPTS = 3
#: The steady window before each fault, in seconds.
STEADY = 1.5
#: Every process started, ended by PID at exit.
STARTED: list[NodeProcess] = []
#: The etcd clusters started, ended at exit.
ETCDS: list[EtcdCluster] = []


def end(process: NodeProcess) -> None:
    """End C{process} by its PID, waking it first should it be stopped."""
    if process.process is not None and process.process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
    process.stop()


def stopAll() -> None:
    """End every process and etcd cluster started."""
    for process in STARTED:
        end(process)
    for etcd in ETCDS:
        etcd.stop()


Process = TypeVar("Process", bound=NodeProcess)


def start(process: Process) -> Process:
    """Start C{process} and remember to end it."""
    STARTED.append(process)
    return process.start()


class Topology:
    """Servers A and B of ECHO and their nodes, on a UDP cluster or on C{etcd}."""

    def __init__(self, directory: Path, cluster: str, etcd: EtcdCluster | None) -> None:
        directory.mkdir()
        self.directory = directory
        self.cluster = cluster
        self.etcd = etcd
        first = freeLoopbackAddress()
        self.addresses = {"A": first, "B": first if etcd is None else
                          freeLoopbackAddress(first=int(first.rpartition(".")[2]) + 1)}
        self.servers: dict[str, EchoProcess] = {}
        self.nodes: dict[str, NodeProcess] = {}

    @property
    def entry(self) -> str:
        """Where the applications ask: the standby's node."""
        return self.addresses["B"]

    def node(self, name: str, port: int) -> NodeProcess:
        cluster: dict[str, Any] = {"name": self.cluster}
        if self.etcd is not None:
            cluster |= {"backend": "etcd", "etcd": self.etcd.endpoints, "lease_ttl": LEASE_TTL}
        config = writeNodeConfig(
            self.directory / f"node-{name}.toml", [self.addresses[name]],
            [{"name": "ECHO", "tcp": port, "priority": "AB".index(name), "check": "none"}],
            serverName=f"HOST{name}", tables={"cluster": cluster})
        node = self.nodes[name] = start(NodeProcess(config,
                                                    self.directory / f"node-{name}.log"))
        return node

    async def start(self, reactor: Any) -> None:
        """Start both servers and both nodes; wait until B's node lists A then B."""
        for name in "AB":
            self.servers[name] = start(EchoProcess(self.directory / f"server-{name}.log",
                                                   self.addresses[name], name))
        if self.etcd is None:
            self.node("A", self.servers["A"].port)
            await until(reactor, lambda: "Active for cluster" in self.nodes["A"].log(), 30.0,
                        "A's node to become active", step=0.05)
        for name in "AB" if self.etcd is not None else "B":
            self.node(name, self.servers[name].port)
        probe = ClusterResolver(reactor, clusterName=self.cluster, timeout=0.5)

        async def listed() -> bool:
            probe.purge(self.entry, "ECHO")
            try:
                found = await probe.resolve(self.entry, "ECHO")
            except Exception:
                return False
            return [c.info.serverName for c in found.candidates] == ["HOSTA", "HOSTB"]

        deadline = reactor.seconds() + 30.0
        while not await listed():
            if reactor.seconds() > deadline:
                raise RuntimeError("B's node did not list A then B within 30 s")
            await sleep(reactor, 0.05)

    def stop(self) -> None:
        """End its processes, by their PIDs."""
        for process in [*self.servers.values(), *self.nodes.values()]:
            end(process)


class Application:
    """One application: a L{LineRequester} on a L{FailoverClient}, learning of moves by C{kind}."""

    def __init__(self, reactor: Any, topology: Topology, kind: str,
                 answerTimeout: float) -> None:
        self.kind = kind
        options: dict[str, Any] = {}
        if kind == "subscribe":
            options["subscribe"] = SubscribeTo(clusterName=topology.cluster)
        elif kind == "etcd":
            assert topology.etcd is not None
            options["etcd"] = WatchEtcd(tuple(topology.etcd.endpoints), topology.cluster)
        self.endpoint = SRPClientEndpoint(
            reactor, topology.entry, "ECHO",
            ClusterResolver(reactor, clusterName=topology.cluster), timeout=1.0, **options)
        self.requester = LineRequester(reactor, rate=RATE, retry=RETRY)
        self.client = FailoverClient(reactor, self.endpoint, self.requester,
                                     answerTimeout=answerTimeout)

    async def start(self, reactor: Any) -> None:
        """Connect, wait for answers from A, and (if any) for the push to be set up."""
        await self.client.connect()
        await until(reactor, lambda: len(self.requester.answers) >= 20, 5.0,
                    f"{self.kind}: answers from A")
        if self.requester.servers() != ["A"]:
            raise RuntimeError(f"{self.kind} started on {self.requester.servers()}, not A")
        watch = self.endpoint.subscription
        if isinstance(watch, NodeSubscription):
            await until(reactor, lambda: watch.confirmed, 5.0, "the subscription")
        elif isinstance(watch, EtcdPlaces):
            await until(reactor, lambda: watch.last is not None, 5.0, "the etcd watch")

    def answeredBy(self, place: str, since: float) -> bool:
        """Whether C{place} answered after C{since}."""
        return any(a.place == place and a.at > since for a in self.requester.history)

    def longestGap(self, since: float, until: float) -> float:
        """The longest time without an answer from C{since} to C{until}."""
        return checkHistory(self.requester.sent, [
            a for a in self.requester.history if a.at <= until], since, until).longestGap

    def row(self, faultAt: float, end: float, serverStopAt: float | None,
            waitedBefore: int) -> dict[str, Any]:
        """
        What the application saw from C{faultAt} to C{end}; C{waitedBefore}:
        its client's L{FailoverClient.waitedWrites} at the fault.
        """
        report = checkHistory(self.requester.sent, self.requester.history, faultAt, end)
        waited = self.client.waitedWrites - waitedBefore
        firstB = min((a.at for a in self.requester.history if a.place == "B"), default=None)
        return {"kind": self.kind, "gap_s": report.longestGap,
                "steady_gap_s": self.longestGap(faultAt - STEADY, faultAt),
                "switch_gap_s": (None if serverStopAt is None else
                                 self.longestGap(faultAt, serverStopAt)),
                "resent": sum(1 for at in self.requester.resent.values() if at >= faultAt),
                "lost": len(report.lost), "stale": len(report.stale),
                "pushed": self.client.moves > 0, "failovers": self.client.failovers,
                "link_gap_s": max((gap for _, gap in self.client.gaps), default=None),
                "waited": waited, "before_write": self.client.moves > 0 and waited == 0,
                "before_server_stop": (None if serverStopAt is None else
                                       firstB is not None and firstB < serverStopAt)}


async def runCell(reactor: Any, topology: Topology, fault: str) -> list[dict[str, Any]]:
    """One fault on C{topology}, with one application of each kind: a row each."""
    _, _, setting = fault.partition("answerTimeout=")
    answerTimeout = float(setting) if setting else DEFAULT_ANSWER_TIMEOUT
    apps = [Application(reactor, topology, kind, answerTimeout)
            for kind in KINDS["udp" if topology.etcd is None else "etcd"]]
    try:
        for app in apps:
            await app.start(reactor)
        await sleep(reactor, STEADY)
        faultAt = reactor.seconds()
        waitedBefore = [app.client.waitedWrites for app in apps]
        serverStopAt: float | None = None
        if fault == "graceful stop of node":
            os.kill(topology.nodes["A"].pid, signal.SIGTERM)
            await sleep(reactor, SERVER_RUNS_ON)
            serverStopAt = reactor.seconds()
            os.kill(topology.servers["A"].pid, signal.SIGTERM)
        else:
            signum = signal.SIGKILL if fault.startswith("kill") else signal.SIGSTOP
            for process in (topology.servers["A"], topology.nodes["A"]):
                os.kill(process.pid, signum)
        await until(reactor, lambda: all(app.answeredBy("B", faultAt) for app in apps),
                    STOP_ANSWER_TIMEOUT + 10.0, "every application to be answered by B")
        await sleep(reactor, 0.3)
        end = reactor.seconds()
        return [app.row(faultAt, end, serverStopAt, waited) |
                {"answer_timeout_s": answerTimeout}
                for app, waited in zip(apps, waitedBefore, strict=True)]
    finally:
        for app in apps:
            await app.client.close()
        await sleep(reactor, 0.2)  # the etcd watches' connections close in the next turns


async def work(reactor: Any, trials: int, directory: Path) -> dict[str, Any]:
    """Every cell, C{trials} times, each on a fresh topology."""
    rows: list[dict[str, Any]] = []
    etcd: EtcdCluster | None = None
    number = 0
    for trial in range(trials):
        for cluster, fault in CELLS:
            if cluster == "etcd" and etcd is None:
                etcd = EtcdCluster(size=3).start()
                ETCDS.append(etcd)
            cell = {"cluster": cluster, "fault": fault, "trial": trial + 1}
            for attempt in range(1, START_ATTEMPTS + 1):
                number += 1
                topology = Topology(directory / f"cell{number}", f"pushed{number}",
                                    etcd if cluster == "etcd" else None)
                try:
                    try:
                        await topology.start(reactor)
                    except Exception as e:
                        # Not a measurement: the machine's other users may
                        # take the address between its choice and the bind.
                        if attempt < START_ATTEMPTS:
                            progress(f"pushed_moves: {cell}: start failed ({e}), anew")
                            continue
                        raise
                    found = await runCell(reactor, topology, fault)
                except Exception as e:  # a broken cell is a result, not the end
                    found = [{"kind": kind, "error": f"{type(e).__name__}: {e}"}
                             for kind in KINDS[cluster]]
                finally:
                    topology.stop()
                break
            for row in found:
                progress(f"pushed_moves: {cell | row}")
                rows.append(cell | row)
    return {"rows": rows}


def extraGap(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> float:
    """
    What the fault added to C{row}'s longest gap: for a graceful stop, over
    the application without a push in the same trial and the same window
    (from the stop until A's server stops: it is not moved, and the worker
    runs both, so a stall of the machine hits both alike); for the other
    faults, over the row's own steady rhythm before the fault.
    """
    if row["switch_gap_s"] is None:
        return float(row["gap_s"] - row["steady_gap_s"])
    baselines = [r for r in rows if r["kind"] == "none" and "error" not in r and all(
        r[key] == row[key] for key in ("cluster", "fault", "trial"))]
    if not baselines:
        return float(row["gap_s"] - row["steady_gap_s"])
    return float(row["switch_gap_s"] - baselines[0]["switch_gap_s"])


def pushed_moves(settings: Settings) -> dict[str, Any]:
    """A graceful switchover, kill -9 and SIGSTOP: with pushed moves and without."""
    trials = 1 if settings.quick else min(settings.trials, 10)
    rows = workerRows("bench.pushed_moves", ["--worker", "--trials", str(trials)],
                      timeout=300 + 120 * trials)
    table, results, misses = [], [], []
    for cluster, fault in CELLS:
        graceful = fault.startswith("graceful")
        for kind in KINDS[cluster]:
            mine = [r for r in rows if (r["cluster"], r["fault"], r["kind"]) ==
                    (cluster, fault, kind)]
            measured = [r for r in mine if "error" not in r]
            gaps = summary([r["gap_s"] for r in measured])
            steady = summary([r["steady_gap_s"] for r in measured])
            extra = max((extraGap(r, rows) for r in measured), default=0.0)
            counts = {key: sum(r[key] for r in measured)
                      for key in ("resent", "lost", "waited", "pushed", "before_write")}
            beforeStop = sum(1 for r in measured if r["before_server_stop"])
            target = graceful and kind != "none"
            met = len(measured) == len(mine) and (not target or (
                extra <= EXTRA_GAP and counts["resent"] == counts["lost"] == 0
                and counts["before_write"] == len(mine)))
            if not met:
                misses.append(f"{cluster}/{fault}/{kind}")
            errors = "; ".join(r["error"] for r in mine if "error" in r)[:60]
            table.append([cluster, fault, kind, str(len(mine)), ms(gaps["median"]),
                          ms(gaps["max"]), ms(steady["max"]), ms(extra),
                          str(counts["resent"]), str(counts["lost"]),
                          f"{counts['pushed']}/{len(mine)}",
                          f"{counts['before_write']}/{len(mine)}" if graceful else "-",
                          str(counts["waited"]),
                          f"{beforeStop}/{len(mine)}" if graceful else "-",
                          errors or (verdict(met) if target else "-")])
            results.append({"cluster": cluster, "fault": fault, "kind": kind,
                            "trials": len(mine), "gap_s": gaps, "steady_gap_s": steady,
                            "max_extra_gap_s": extra, "before_server_stop": beforeStop,
                            "errors": [r["error"] for r in mine if "error" in r],
                            "met": met} | counts)
    print(formatTable(["CLUSTER", "FAULT", "MOVES", "TRIALS", "MEDIAN GAP (ms)",
                       "MAX GAP (ms)", "STEADY MAX (ms)", "MAX EXTRA (ms)", "RESENT", "LOST",
                       "PUSHED", "BEFORE WRITE", "WAITED", "BEFORE SERVER STOP",
                       "VERDICT"], table))
    print(f"\nA line every {1000 / RATE:.0f} ms; lease TTL {LEASE_TTL} s; answer timeout "
          f"{DEFAULT_ANSWER_TIMEOUT:g} s unless the fault says otherwise. GAP: the longest "
          f"time without an answer after the fault; STEADY: the same in the "
          f"{STEADY:g} s before it; EXTRA: for a graceful stop, the longest gap from the "
          f"stop to A's server's stop less the same of the application without a push "
          f"in the same trial, else GAP - STEADY of the same trial; WAITED: writes held "
          f"for want of a connection. Target: a "
          f"pushed graceful switchover, extra gap <= {ms(EXTRA_GAP)} ms (one request "
          f"interval), nothing resent or lost, every move before its write. "
          f"Cells missed: {', '.join(misses) or 'none'}")
    return {"cells": results, "missed": misses, "extra_gap_target": EXTRA_GAP,
            "lease_ttl": LEASE_TTL, "rows": rows}


def main(argv: Sequence[str] | None = None) -> None:
    """The worker: run every cell on a reactor and print C{RESULT <json>}."""
    parser = argparse.ArgumentParser(prog="python -m bench.pushed_moves")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--trials", type=int, default=1)
    options = parser.parse_args(argv)
    runWorkerMain(lambda reactor, scratch: work(reactor, options.trials, scratch),
                  "srp-pushed-", stopAll)


if __name__ == "__main__":
    main(sys.argv[1:])
