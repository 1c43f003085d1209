"""
C{takeover}, C{sigstop} and C{handover}: a cluster of three real C{srp
serve} processes sharing one 127.0.0.N address, under [MC-SQLR] client
load, losing its active to C{kill -9} (takeover), to SIGSTOP (sigstop: the
passive that takes over fences it) or to a graceful stop (handover).

The client is L{RequestStream}: CLNT_UCAST_INST requests for SALES at a
steady rate, each on a socket of its own so that every reply is matched
to its request.  Each node registers SALES with its own priority (node
I{i}: priority I{i}, TCP port 50000 + I{i}), so a reply tells which node's
registration was the best one answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from bench.common import Settings, ms, summary, verdict, waitUntil
from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.cli import formatTable
from srp.testing.load import Exchange, RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest, InstancesResponse, decodeResponse
from srp.wire.cluster import StatusQuery, StatusReply, clusterId
from srp.wire.mcsqlr import BROWSER_PORT

SIZE = 3
CLUSTER = "benchproc"
#: Targets of takeover and sigstop: median and maximum time from the fault to the next answer.
TAKEOVER_MEDIAN = 1.0
TAKEOVER_MAX = 1.5
#: Requests/s of the handover load, and the requests it may lose.
HANDOVER_RATE = 1000
#: The rate the handover stream is asked for, a little more, so that it reaches HANDOVER_RATE.
STREAM_RATE = 1100
#: Seconds a cluster gets to settle after a node (re)starts.
SETTLE_TIMEOUT = 20.0
#: Log lines that mark a node's role, and the role each means.
ROLE_MARKS = {"Active for cluster": "active", "Passive in cluster": "passive",
              "Stepping down": "probing", "taking over at rank": "waiting"}


@implementer(IReactorTime)
class WallClock:
    """The real time, for L{ClusterAuthenticator} outside a reactor."""

    def seconds(self) -> float:
        return time.time()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> IDelayedCall:
        raise NotImplementedError("no reactor runs here")

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return []


def status(address: str, cluster: str = CLUSTER, timeout: float = 1.0,
           attempts: int = 3) -> dict[str, Any]:
    """What the active at C{address} says of itself (C{srp status --json}), blocking."""
    auth = ClusterAuthenticator(WallClock(), clusterId(cluster), randomNodeId())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout / attempts)
        for _ in range(attempts):
            sock.sendto(auth.seal(StatusQuery(), 0), (address, BROWSER_PORT))
            try:
                while True:
                    datagram, source = sock.recvfrom(65535)
                    try:
                        envelope = auth.open(datagram, source[0])
                    except Rejected:
                        continue
                    if isinstance(envelope.message, StatusReply):
                        result: dict[str, Any] = json.loads(envelope.message.document)
                        return result
            except TimeoutError:
                continue
    raise RuntimeError(f"no status from {address} within {timeout:g} s")


def roleIn(log: str) -> str | None:
    """The role the last role line of a node's log names, if any."""
    found = [(log.rfind(mark), role) for mark, role in ROLE_MARKS.items()]
    position, role = max(found)
    return role if position >= 0 else None


class ProcessCluster:
    """Three C{srp serve} nodes on one free loopback address, each started by its own PID."""

    def __init__(self, directory: Path, size: int = SIZE) -> None:
        self.directory = directory
        self.address = freeLoopbackAddress(BROWSER_PORT)
        self.nodes = [NodeProcess(self._config(i), directory / f"node{i}.log")
                      for i in range(size)]

    def _config(self, index: int) -> Path:
        path = writeNodeConfig(self.directory / f"node{index}.toml", [self.address], [
            {"name": "SALES", "tcp": 50000 + index, "priority": index},
            {"name": f"N{index}", "tcp": 60000 + index},
        ], serverName=f"H{index}")
        with path.open("a") as config:
            config.write(f'\n[cluster]\nname = "{CLUSTER}"\n')
        return path

    def start(self) -> None:
        """Start every node, the first alone so that it becomes the active; wait until settled."""
        for node in self.nodes:
            node.start()
            if node is self.nodes[0]:
                waitUntil(lambda: roleIn(self.nodes[0].log()) == "active", SETTLE_TIMEOUT,
                          "the first node to become active")
        self.waitSettled()

    def alive(self, node: NodeProcess) -> bool:
        return node.process is not None and node.process.poll() is None

    def active(self, besides: NodeProcess | None = None) -> NodeProcess:
        """The live node whose log says it is active (exactly one), C{besides} left out."""
        found = [n for n in self.nodes if self.alive(n) and roleIn(n.log()) == "active"
                 and n is not besides]
        if len(found) != 1:
            raise RuntimeError(f"{len(found)} active nodes: {self.roles()}")
        return found[0]

    def roles(self) -> list[str | None]:
        return [roleIn(n.log()) if self.alive(n) else "dead" for n in self.nodes]

    def settled(self) -> bool:
        """Every node alive, one active, the others passive, and the active knows them all."""
        roles = self.roles()
        if sorted(r or "" for r in roles) != ["active"] + ["passive"] * (len(roles) - 1):
            return False
        try:
            state = status(self.address, timeout=0.3)
        except RuntimeError:
            return False
        return bool(state["role"] == "active" and len(state["passives"]) == len(roles) - 1)

    def waitSettled(self) -> None:
        waitUntil(self.settled, SETTLE_TIMEOUT, self.describe, step=0.05)

    def describe(self) -> str:
        """The roles, what the active says, and the end of each log: for errors."""
        try:
            state: Any = status(self.address)
            state = {k: state.get(k) for k in ("node", "role", "epoch", "passives")}
        except RuntimeError as e:
            state = str(e)
        tails = "\n".join(
            f"--- {n.logPath.name} (pid {n.process.pid if n.process else '-'}, exit "
            f"{n.process.poll() if n.process else '-'}):\n"
            + "\n".join(n.log().splitlines()[-8:]) for n in self.nodes)
        return f"the cluster to settle: roles {self.roles()}; status {state}\n{tails}"

    def dead(self) -> list[NodeProcess]:
        """The nodes whose process has exited."""
        return [n for n in self.nodes if not self.alive(n)]

    def restartDead(self) -> None:
        """Start every node that exited again, and wait until the cluster is settled."""
        for node in self.dead():
            if node.process is not None:
                node.process.wait(10)
            node.start()
        self.waitSettled()

    def stop(self) -> None:
        """End every node by its PID (waking stopped ones first)."""
        for node in self.nodes:
            if self.alive(node):
                os.kill(node.pid, signal.SIGCONT)
            node.stop()


def salesRequest() -> bytes:
    return InstanceRequest("SALES").encode()


def tcpOf(reply: bytes | None) -> int | None:
    """The TCP port an [MC-SQLR] reply gives SALES, or None."""
    if reply is None:
        return None
    response = decodeResponse(reply)
    return response.instances[0].tcp if isinstance(response, InstancesResponse) else None


class _Answered(Exception):
    """The stream has seen what it waited for."""


def faultUnderLoad(cluster: ProcessCluster, rng: random.Random,
                   signum: signal.Signals) -> tuple[NodeProcess, dict[str, Any]]:
    """Send C{signum} to the active under load; the victim, and the time to the next answer."""
    victim = cluster.active()
    stream = RequestStream((cluster.address, BROWSER_PORT), salesRequest(), rate=100, timeout=0.05)
    faultAt: list[float] = []

    def fault() -> None:
        os.kill(victim.pid, signum)
        faultAt.append(time.monotonic())

    def answeredSinceFault() -> None:
        if faultAt and any(e.answeredAt is not None and e.sentAt > faultAt[0]
                           for e in stream.exchanges):
            raise _Answered

    # The fault falls anywhere within one KeepAlive interval (0.25 s); checks
    # end the stream once a request sent after it is answered (5 s at most).
    at = 0.3 + rng.uniform(0.0, 0.25)
    checks = [(at + 0.2 + 0.02 * n, answeredSinceFault) for n in range(240)]
    with contextlib.suppress(_Answered):
        stream.run(at + 5.0, at=[(at, fault), *checks])
    exchanges = sorted(stream.exchanges, key=lambda e: e.sentAt)
    before = [e for e in exchanges if e.sentAt < faultAt[0] - 0.06]
    after = [e for e in exchanges if e.sentAt > faultAt[0] and e.answeredAt is not None]
    gap = after[0].answeredAt - faultAt[0] if after else None  # type: ignore[operator]
    # A stopped victim still says it is active: the new active is another.
    newActive = cluster.active(besides=victim) if after else None
    return victim, {"victim": cluster.nodes.index(victim), "gap_s": gap,
                    "unanswered_before_fault": sum(e.answeredAt is None for e in before),
                    "sent": len(exchanges), "new_active": None if newActive is None
                    else cluster.nodes.index(newActive),
                    "answered_port": tcpOf(after[0].reply) if after else None}


def othersDied(cluster: ProcessCluster, victim: NodeProcess) -> list[str]:
    """The nodes other than C{victim} that exited, with their exit codes."""
    return [f"{cluster.nodes.index(n)} ({n.process.returncode if n.process else '?'})"
            for n in cluster.dead() if n is not victim]


def takeoverTrial(cluster: ProcessCluster, rng: random.Random) -> dict[str, Any]:
    """Kill -9 the active under load; return the time to the next answer, and restart it."""
    victim, row = faultUnderLoad(cluster, rng, signal.SIGKILL)
    died = othersDied(cluster, victim)
    cluster.restartDead()
    return row | {"others_died": died}


def sigstopTrial(cluster: ProcessCluster, rng: random.Random) -> dict[str, Any]:
    """
    SIGSTOP the active under load; return the time to the next answer; then
    SIGCONT it, and the time until the cluster settled with it passive.
    """
    victim, row = faultUnderLoad(cluster, rng, signal.SIGSTOP)
    os.kill(victim.pid, signal.SIGCONT)
    continuedAt = time.monotonic()
    died = othersDied(cluster, victim)
    if died or victim in cluster.dead():
        cluster.restartDead()
    else:
        cluster.waitSettled()
    return row | {"others_died": died, "settled_s": time.monotonic() - continuedAt,
                  "old_role": roleIn(victim.log())}


def runTrials(name: str, count: int,
              trial: Callable[[ProcessCluster], dict[str, Any]]) -> list[dict[str, Any]]:
    """Start a L{ProcessCluster}, run C{trial} on it C{count} times, stop it; the rows."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"srp-bench-{name}-") as scratch:
        cluster = ProcessCluster(Path(scratch))
        try:
            cluster.start()
            for number in range(1, count + 1):
                print(f"{name}: trial {number}/{count} ...", file=sys.stderr, flush=True)
                rows.append({"trial": number} | trial(cluster))
        finally:
            cluster.stop()
    return rows


def gapReport(fault: str, victim: str, rows: list[dict[str, Any]],
              more: Sequence[tuple[str, Callable[[dict[str, Any]], str]]] = ()
              ) -> dict[str, Any]:
    """Print the trials of a fault and their summary against the targets; the summary."""
    print(formatTable(
        ["TRIAL", victim, "NEW ACTIVE", f"{fault} → NEXT ANSWER (ms)", "REQUESTS SENT",
         f"UNANSWERED BEFORE {fault}", "OTHERS DIED (EXIT)", *(label for label, _ in more)],
        [[str(r["trial"]), str(r["victim"]), str(r["new_active"]), ms(r["gap_s"]),
          str(r["sent"]), str(r["unanswered_before_fault"]),
          ", ".join(r["others_died"]) or "-", *(cell(r) for _, cell in more)]
         for r in rows]))
    gaps = [r["gap_s"] for r in rows if r["gap_s"] is not None]
    missing = len(rows) - len(gaps)
    stats = summary(gaps)
    print()
    print(formatTable(["TRIALS", "MEDIAN (ms)", "P90 (ms)", "MIN (ms)", "MAX (ms)",
                       "NO ANSWER WITHIN 5 s"],
                      [[str(stats["n"]), ms(stats["median"]), ms(stats["p90"]),
                        ms(stats["min"]), ms(stats["max"]), str(missing)]]))
    medianOk = bool(gaps) and stats["median"] < TAKEOVER_MEDIAN
    maxOk = bool(gaps) and not missing and stats["max"] < TAKEOVER_MAX
    print(f"\nmedian {ms(stats['median'])} ms against the {TAKEOVER_MEDIAN * 1000:.0f} ms "
          f"target: {verdict(medianOk)}; max {ms(stats['max'])} ms against "
          f"{TAKEOVER_MAX * 1000:.0f} ms: {verdict(maxOk)}")
    return {"summary_s": stats, "no_answer": missing, "median_met": medianOk,
            "max_met": maxOk, "trials": rows}


def takeover(settings: Settings) -> dict[str, Any]:
    """Time from kill -9 of the active to the next answer, 3 srp serve nodes, RequestStream."""
    rng = random.Random(3)
    rows = runTrials("takeover", settings.trials, lambda cluster: takeoverTrial(cluster, rng))
    return gapReport("KILL", "KILLED NODE", rows)


def sigstop(settings: Settings) -> dict[str, Any]:
    """Time from SIGSTOP of the active to the next answer, 3 srp serve nodes sharing an address."""
    rng = random.Random(4)
    rows = runTrials("sigstop", settings.trials, lambda cluster: sigstopTrial(cluster, rng))
    result = gapReport("STOP", "STOPPED NODE", rows, [
        ("SIGCONT → SETTLED (ms)", lambda r: ms(r["settled_s"])),
        ("OLD ACTIVE THEN", lambda r: str(r["old_role"]))])
    stepped = sum(r["old_role"] == "passive" for r in rows)
    print(f"the old active was passive after SIGCONT in {stepped} of {len(rows)} trials")
    return result | {"old_active_passive": stepped}


def handoverTrial(cluster: ProcessCluster) -> dict[str, Any]:
    """SIGTERM the active under 1,000 requests/s; count the requests left unanswered."""
    leaving = cluster.active()
    old = status(cluster.address)
    stream = RequestStream((cluster.address, BROWSER_PORT), salesRequest(), rate=STREAM_RATE,
                           timeout=0.25)
    duration, stopAt = 2.0, 0.7
    startedAt = time.monotonic()
    exchanges: list[Exchange] = stream.run(
        duration, at=[(stopAt, lambda: os.kill(leaving.pid, signal.SIGTERM))])
    assert leaving.process is not None
    code = leaving.process.wait(10)
    new = status(cluster.address, timeout=3.0)
    answered = sum(e.answeredAt is not None for e in exchanges)
    # The active at the end was a passive until the hand-over (a node that
    # was ever active is restarted), so everything it answered was this
    # stream's; the old active answered the rest.
    byNew = int(new["counters"].get("answered", 0))
    ports = [tcpOf(e.reply) for e in exchanges if e.reply is not None]
    # A node other than the one stopped may have died (see docs/benchmarks.md).
    died = [f"{cluster.nodes.index(n)} ({n.process.returncode if n.process else '?'})"
            for n in cluster.dead() if n is not leaving]
    cluster.restartDead()
    return {"leaving": cluster.nodes.index(leaving), "exit_code": code, "others_died": died,
            "sent": len(exchanges), "rate": len(exchanges) / duration,
            "unanswered": len(exchanges) - answered, "by_old": answered - byNew,
            "by_new": byNew, "old_node": old["node"], "new_node": new["node"],
            "sockets_taken": new["counters"].get("sockets_taken", 0),
            "first_port": ports[0] if ports else None, "last_port": ports[-1] if ports else None,
            "wall_s": time.monotonic() - startedAt}


def handover(settings: Settings) -> dict[str, Any]:
    """Requests lost when the active of 3 srp serve nodes stops gracefully under 1,000 req/s."""
    rows = runTrials("handover", settings.handovers, handoverTrial)
    print(formatTable(
        ["TRIAL", "STOPPED NODE", "EXIT", "REQUESTS", "REQUESTS/S", "UNANSWERED",
         "ANSWERED BY OLD", "ANSWERED BY NEW", "SOCKETS HANDED OVER", "OTHERS DIED (EXIT)"],
        [[str(r["trial"]), str(r["leaving"]), str(r["exit_code"]), str(r["sent"]),
          f"{r['rate']:,.0f}", str(r["unanswered"]), str(r["by_old"]), str(r["by_new"]),
          str(r["sockets_taken"]), ", ".join(r["others_died"]) or "-"] for r in rows]))
    lost = sum(r["unanswered"] for r in rows)
    sent = sum(r["sent"] for r in rows)
    slowest = min((r["rate"] for r in rows), default=0.0)
    deaths = sum(len(r["others_died"]) for r in rows)
    if deaths:
        print(f"\n{deaths} node(s) other than the one stopped died during the hand-overs "
              "(exit -13: SIGPIPE; see docs/benchmarks.md)")
    print(f"\n{lost} of {sent} requests unanswered in {len(rows)} graceful stops "
          f"(target 0: {verdict(lost == 0)}); slowest stream {slowest:,.0f} requests/s "
          f"(at least {HANDOVER_RATE:,} wanted: {verdict(slowest >= HANDOVER_RATE)})")
    return {"unanswered": lost, "sent": sent, "met": lost == 0, "slowest_rate": slowest,
            "others_died": deaths,
            "trials": rows}
