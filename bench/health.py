"""
The health-check benchmarks: real C{srp serve} processes on a free
127.0.0.N address, and real listening processes (L{bench.listeners})
standing in for the instances' servers.

- C{instance_down}: two nodes of one cluster register each instance, the
  primary (priority 0) and the standby (priority 1); C{kill -9} of the
  primary's server (not its node) until a plain [MC-SQLR] answer names the
  standby's port, and from its restart until the answer names the
  primary's again; with the primary's node active, and with the standby's.
- C{sighup_reload}: SIGHUP reloads of a node with 1,000 health-checked
  instances under 1,000 requests/s: requests unanswered and the slowest
  answers.
- C{health_cost}: the CPU a node spends checking 1,000 live instances
  (C{tcp}, the default, and C{connect}), against the same node with
  C{check = "none"}.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import ROOT, Settings, ms, pinTo, stopPid, summary, verdict, waitUntil
from bench.listeners import READY
from bench.loadgen import cpuSeconds, instanceName
from bench.takeover import roleIn, status, tcpOf
from srp.cli import formatTable
from srp.server.health import HealthSettings
from srp.testing.load import Exchange, RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest
from srp.wire.mcsqlr import BROWSER_PORT

#: Targets of instance_down: median and maximum time to an answer naming the standby.
DOWN_MEDIAN = 1.0
DOWN_MAX = 1.5
#: Requests/s with which instance_down polls the cluster, and each one's timeout.
POLL_RATE = 100
POLL_TIMEOUT = 0.05
#: Seconds instance_down waits at most for an answer to change.
POLL_LIMIT = 5.0
#: The matrix of instance_down: which node is active.
ORDERS = {"primary's node active": (0, 1), "standby's node active": (1, 0)}
#: Requests/s sighup_reload sends (a little more than the 1,000 wanted), and
#: how long a request may go unanswered.
RELOAD_RATE = 1100
RELOAD_WANTED = 1000
RELOAD_TIMEOUT = 0.25
#: Seconds between two reloads, and after a SIGHUP that count as "during" it.
RELOAD_SPACING = 0.5
RELOAD_WINDOW = 0.25
#: Instances checked by health_cost and registered by sighup_reload.
CHECKED_INSTANCES = 1000
#: The target of health_cost: checks cost under this share of one core.
COST_TARGET = 0.05
#: The checks health_cost runs: the baseline, a connect per check, the default.
COST_CHECKS = ("none", "connect", "tcp")
#: A node that used this share of a core or more could not keep up.
SATURATED = 0.9
#: The default check interval: health_cost's node runs CHECKED_INSTANCES / this checks/s.
DEFAULT_INTERVAL = HealthSettings().interval
#: Seconds a health_cost node runs before its CPU is measured.
COST_WARMUP = 3.0
#: Seconds a cluster gets to settle.
SETTLE_TIMEOUT = 20.0


class Listeners:
    """A L{bench.listeners} process: COUNT listening sockets on HOST, ended by its PID."""

    def __init__(self, host: str, count: int, ports: Sequence[int] = ()) -> None:
        self.host = host
        self.count = count
        self.ports = list(ports)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Listeners:
        """Start it and wait until every socket listens; C{ports} are then theirs."""
        argv = [sys.executable, "-m", "bench.listeners", self.host, str(self.count)]
        if self.ports:
            argv += ["--ports", ",".join(map(str, self.ports))]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                        cwd=ROOT)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline().decode()
        if not line.startswith(READY) or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"bench.listeners did not start: {line!r}")
        self.ports = json.loads(line[len(READY):])
        return self

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.process is not None, "not started"
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL it, as a crash would, and reap it."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """End it by its PID, if it runs."""
        if self.process is not None:
            stopPid(self.process)


class _Seen(Exception):
    """The poll has seen the answer it waited for."""


def answeredWith(address: str, name: str, port: int, limit: float = POLL_LIMIT,
                 since: float | None = None) -> tuple[float | None, int]:
    """
    Ask C{address} for C{name} every 10 ms until an answer names TCP C{port}:
    when that answer came (C{time.monotonic}, None if not within C{limit}
    seconds) and how many requests were sent.
    """
    stream = RequestStream((address, BROWSER_PORT), InstanceRequest(name).encode(),
                           rate=POLL_RATE, timeout=POLL_TIMEOUT)

    def found() -> None:
        if any(tcpOf(e.reply) == port for e in stream.exchanges):
            raise _Seen

    checks = [(0.01 * n, found) for n in range(1, int(limit * 100))]
    with contextlib.suppress(_Seen):
        stream.run(limit, at=checks)
    times = [e.answeredAt for e in stream.exchanges
             if e.answeredAt is not None and tcpOf(e.reply) == port]
    return (min(times) if times else None), len(stream.exchanges)


class PairCluster:
    """
    Two C{srp serve} nodes of one cluster on one address: node 0 registers
    each instance at priority 0 (the primary), node 1 at priority 1 (the
    standby), each backed by its own listening process.
    """

    def __init__(self, directory: Path, instances: int, order: tuple[int, int]) -> None:
        self.directory = directory
        self.address = freeLoopbackAddress(BROWSER_PORT)
        self.names = [f"SALES{n:02d}" for n in range(1, instances + 1)]
        self.order = order
        #: One process per primary server, so that each can die alone.
        self.primaries: list[Listeners] = []
        self.standby = Listeners(self.address, instances)
        self.nodes: list[NodeProcess] = []

    def start(self) -> None:
        """Start the servers, then the node that is to be active, then the other."""
        self.standby.start()
        self.primaries = [Listeners(self.address, 1).start() for _ in self.names]
        ports = [[p.ports[0] for p in self.primaries], self.standby.ports]
        for index in self.order:
            config = writeNodeConfig(
                self.directory / f"node{index}.toml", [self.address],
                [{"name": name, "tcp": ports[index][n], "priority": index}
                 for n, name in enumerate(self.names)],
                serverName=f"H{index}", tables={"cluster": {"name": "benchhealth"}})
            node = NodeProcess(config, self.directory / f"node{index}.log").start()
            self.nodes.append(node)
            waitUntil(partial(hasRole, node), SETTLE_TIMEOUT, self.describe)
        waitUntil(self.settled, SETTLE_TIMEOUT, self.describe)

    def describe(self) -> str:
        """What the nodes logged last: for errors."""
        return f"the cluster at {self.address} to settle:\n" + "\n".join(
            f"--- {node.logPath.name}:\n" + "\n".join(node.log().splitlines()[-6:])
            for node in self.nodes)

    def settled(self) -> bool:
        """The first node started is active, knows the other, and every registration is up."""
        try:
            state = status(self.address, cluster="benchhealth", timeout=0.3)
        except RuntimeError:
            return False
        return bool(roleIn(self.nodes[0].log()) == "active" and len(state["passives"]) == 1
                    and len(state["registrations"]) == 2 * len(self.names)
                    and not any(r["down"] for r in state["registrations"]))

    def stop(self) -> None:
        """End every node and server by its PID."""
        for node in self.nodes:
            node.stop()
        for servers in [*self.primaries, self.standby]:
            servers.stop()


def startPair(directory: Path, instances: int, order: tuple[int, int],
              attempts: int = 3) -> PairCluster:
    """
    Start a L{PairCluster}; if it does not settle (another process may take
    the free address meanwhile), stop it and try another address.
    """
    for attempt in range(1, attempts + 1):
        scratch = directory / f"attempt{attempt}"
        scratch.mkdir()
        cluster = PairCluster(scratch, instances, order)
        try:
            cluster.start()
        except RuntimeError as e:
            cluster.stop()
            if attempt == attempts:
                raise
            print(f"note: {e}\ntrying another address", file=sys.stderr)
            continue
        return cluster
    raise AssertionError("unreachable")


def hasRole(node: NodeProcess) -> bool:
    """Whether C{node}'s log says it is active or passive."""
    return roleIn(node.log()) in ("active", "passive")


def downTrial(cluster: PairCluster, index: int, rng: random.Random) -> dict[str, Any]:
    """Kill instance C{index}'s primary server; time the answers' move to the standby and back."""
    name = cluster.names[index]
    primary = cluster.primaries[index]
    primaryPort, standbyPort = primary.ports[0], cluster.standby.ports[index]
    before, _ = answeredWith(cluster.address, name, primaryPort, limit=2.0)
    # The kill falls anywhere within one check interval.
    time.sleep(rng.uniform(0.0, 0.25))
    primary.kill()
    killedAt = time.monotonic()
    movedAt, sentDown = answeredWith(cluster.address, name, standbyPort)
    primary.start()
    listeningAt = time.monotonic()
    backAt, sentBack = answeredWith(cluster.address, name, primaryPort, limit=2 * POLL_LIMIT)
    return {"instance": name, "primary_port": primaryPort, "standby_port": standbyPort,
            "primary_before": before is not None,
            "down_s": None if movedAt is None else movedAt - killedAt,
            "back_s": None if backAt is None else backAt - listeningAt,
            "requests": sentDown + sentBack}


def instance_down(settings: Settings) -> dict[str, Any]:
    """Primary server killed, its node alive: time until [MC-SQLR] answers name the standby."""
    rng = random.Random(10)
    rows: list[dict[str, Any]] = []
    for label, order in ORDERS.items():
        with tempfile.TemporaryDirectory(prefix="srp-bench-down-") as scratch:
            cluster = startPair(Path(scratch), settings.trials, order)
            try:
                for index in range(settings.trials):
                    print(f"instance_down ({label}): trial {index + 1}/{settings.trials} ...",
                          file=sys.stderr, flush=True)
                    rows.append({"active": label, "trial": index + 1}
                                | downTrial(cluster, index, rng))
            finally:
                cluster.stop()
    print(formatTable(
        ["ACTIVE", "TRIAL", "INSTANCE", "PRIMARY ANSWERED BEFORE", "KILL → STANDBY (ms)",
         "RESTART → PRIMARY (ms)", "REQUESTS"],
        [[r["active"], str(r["trial"]), r["instance"], "yes" if r["primary_before"] else "NO",
          ms(r["down_s"]), ms(r["back_s"]), str(r["requests"])] for r in rows]))
    results: dict[str, Any] = {}
    table = []
    for label in ORDERS:
        mine = [r for r in rows if r["active"] == label]
        down = [r["down_s"] for r in mine if r["down_s"] is not None]
        back = [r["back_s"] for r in mine if r["back_s"] is not None]
        stats, backStats = summary(down), summary(back)
        missing = len(mine) - len(down) + len(mine) - len(back)
        met = (bool(down) and not missing and all(r["primary_before"] for r in mine)
               and stats["median"] < DOWN_MEDIAN and stats["max"] < DOWN_MAX)
        results[label] = {"down_s": stats, "back_s": backStats, "missing": missing, "met": met}
        table.append([label, str(stats["n"]), ms(stats["median"]), ms(stats["p90"]),
                      ms(stats["max"]), ms(backStats["median"]), ms(backStats["max"]),
                      str(missing), verdict(met)])
    print()
    print(formatTable(["ACTIVE", "TRIALS", "DOWN MEDIAN (ms)", "DOWN P90 (ms)",
                       "DOWN MAX (ms)", "BACK MEDIAN (ms)", "BACK MAX (ms)", "NO ANSWER",
                       "TARGET"], table))
    print(f"\ntarget: median < {DOWN_MEDIAN * 1000:.0f} ms and max < {DOWN_MAX * 1000:.0f} ms "
          f"from kill -9 to an answer naming the standby, in each row")
    return {"rows": results, "met": all(r["met"] for r in results.values()),
            "targets_s": {"median": DOWN_MEDIAN, "max": DOWN_MAX}, "trials": rows}


def checkedInstances(ports: Sequence[int], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """INST00001 ... on C{ports}, each with the keys C{extra}."""
    return [{"name": instanceName(n + 1), "tcp": port, **extra} for n, port in enumerate(ports)]


def startNode(config: Path, log: Path, address: str, name: str, port: int) -> NodeProcess:
    """
    Start a one-node cluster; wait until it is active and answers C{name}
    with C{port} (its status is too large to ask for: 1,000 registrations
    do not fit in one datagram).
    """
    node = NodeProcess(config, log).start(timeout=120)
    waitUntil(lambda: roleIn(node.log()) == "active", SETTLE_TIMEOUT,
              f"the node at {address} to be active")
    answered, _ = answeredWith(address, name, port)
    if answered is None:
        node.stop()
        raise RuntimeError(f"the node at {address} does not answer {name} with {port}")
    return node


def downLines(node: NodeProcess) -> int:
    """How many times C{node} has logged that an instance is down."""
    return node.log().count(" is down: ")


def costRun(node: NodeProcess, servers: Listeners, check: str,
            seconds: float) -> dict[str, Any]:
    """
    The CPU time C{node} uses in C{seconds} after a warm-up; then, for the
    default check, kill the servers and time until it has found every
    instance down.
    """
    time.sleep(COST_WARMUP)
    startedAt, startCpu = time.monotonic(), cpuSeconds(node.pid)
    time.sleep(seconds)
    endCpu, endedAt = cpuSeconds(node.pid), time.monotonic()
    assert startCpu is not None and endCpu is not None
    row = {"check": check, "seconds": endedAt - startedAt, "cpu_s": endCpu - startCpu,
           "share": (endCpu - startCpu) / (endedAt - startedAt),
           "down_before": downLines(node), "all_down_s": None}
    if check == "tcp":
        # Proof that every instance is checked: they all go down.
        servers.kill()
        killedAt = time.monotonic()
        with contextlib.suppress(RuntimeError):
            waitUntil(lambda: downLines(node) >= CHECKED_INSTANCES, 5.0,
                      "every instance to be down")
            row["all_down_s"] = time.monotonic() - killedAt
    return row


def health_cost(settings: Settings) -> dict[str, Any]:
    """CPU share of one core a node spends checking 1,000 live instances (4,000 checks/s)."""
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="srp-bench-cost-") as scratch:
        directory = Path(scratch)
        address = freeLoopbackAddress(BROWSER_PORT)
        servers = Listeners(address, CHECKED_INSTANCES).start()
        try:
            pinTo(servers.pid, 1 if settings.pin else None)
            # tcp last: it ends by killing the servers.
            for check in COST_CHECKS:
                print(f"health_cost: check = {check!r} ...", file=sys.stderr, flush=True)
                config = writeNodeConfig(directory / f"{check}.toml", [address],
                                         checkedInstances(servers.ports, {"check": check}),
                                         tables={"cluster": {"name": "healthcost"}})
                node = startNode(config, directory / f"{check}.log", address,
                                 instanceName(CHECKED_INSTANCES), servers.ports[-1])
                try:
                    pinTo(node.pid, 0 if settings.pin else None)
                    rows[check] = costRun(node, servers, check, settings.cpuSeconds)
                finally:
                    node.stop()
        finally:
            servers.stop()
    for row in rows.values():
        row["cost"] = row["share"] - rows["none"]["share"]
    print(formatTable(
        ["CHECK", "SECONDS", "NODE CPU (s)", "SHARE OF ONE CORE", "COST (- none)",
         "DOWN WHILE MEASURED", "ALL 1,000 DOWN AFTER THE SERVERS' KILL (ms)"],
        [[r["check"], f"{r['seconds']:.1f}", f"{r['cpu_s']:.2f}", f"{r['share']:.1%}",
          f"{r['cost']:.1%}", str(r["down_before"]), "-" if r["check"] != "tcp" else
          ms(r["all_down_s"]) if r["all_down_s"] is not None else "NOT WITHIN 5 s"]
         for r in rows.values()]))
    tcp, connect = rows["tcp"], rows["connect"]
    perCheck = tcp["cost"] / (CHECKED_INSTANCES / DEFAULT_INTERVAL) * 1e6
    met = tcp["cost"] < COST_TARGET and tcp["down_before"] == 0 and tcp["all_down_s"] is not None
    print(f"\ntcp checks of {CHECKED_INSTANCES:,} instances every {DEFAULT_INTERVAL} s cost "
          f"{tcp['cost']:.1%} of one core, {perCheck:.1f} µs per check; target "
          f"< {COST_TARGET:.0%}: {verdict(met)}")
    if connect["share"] >= SATURATED:
        print(f"connect checks took {connect['share']:.0%} of a core: the node could not keep "
              f"up with {CHECKED_INSTANCES / DEFAULT_INTERVAL:,.0f} connections/s")
    return {"cost_share": tcp["cost"], "us_per_check": perCheck, "met": met,
            "target": COST_TARGET, "connect_cost_share": connect["cost"],
            "instances": CHECKED_INSTANCES, "runs": list(rows.values())}


def sighup_reload(settings: Settings) -> dict[str, Any]:
    """SIGHUP reloads of a node with 1,000 checked instances under 1,000 requests/s."""
    with tempfile.TemporaryDirectory(prefix="srp-bench-hup-") as scratch:
        directory = Path(scratch)
        address = freeLoopbackAddress(BROWSER_PORT)
        # Two more listeners than instances: SALES's second port and the one added.
        servers = Listeners(address, CHECKED_INSTANCES + 2).start()
        try:
            *ports, otherPort, addedPort = servers.ports
            config = directory / "node.toml"
            base = checkedInstances(ports[1:], {})
            versions = reloadVersions(ports[0], otherPort, addedPort, settings.reloads)

            def write(instances: list[dict[str, Any]]) -> None:
                staged = directory / "next.toml"
                writeNodeConfig(staged, [address], instances + base,
                                tables={"cluster": {"name": "benchhup"}})
                staged.replace(config)

            write(versions[0][1])
            node = startNode(config, directory / "node.log", address, "SALES", ports[0])
            try:
                result = reloadUnderLoad(node, address, versions, write)
            finally:
                node.stop()
        finally:
            servers.stop()
    rows = result["reloads"]
    print(formatTable(
        ["RELOAD", "CHANGE", "SALES PORT", "ANSWERED IN WINDOW", "UNANSWERED IN WINDOW",
         "SLOWEST IN WINDOW (ms)", "NEW PORT ANSWERED AFTER (ms)"],
        [[str(r["reload"]), r["change"], str(r["port"]), str(r["answered"]),
          str(r["unanswered"]), ms(r["slowest_s"]), ms(r["applied_s"])] for r in rows]))
    print()
    print(formatTable(
        ["REQUESTS", "REQUESTS/S", "UNANSWERED", "MEDIAN (ms)", "SLOWEST DURING RELOADS (ms)",
         "SLOWEST OTHERWISE (ms)", "RELOADS APPLIED", "ROLE AT END"],
        [[str(result["sent"]), f"{result['rate']:,.0f}", str(result["unanswered"]),
          ms(result["median_s"]), ms(result["slowest_during_s"]),
          ms(result["slowest_otherwise_s"]), str(result["reloads_applied"]),
          result["role"]]]))
    met = (result["unanswered"] == 0 and result["rate"] >= RELOAD_WANTED
           and result["reloads_applied"] == len(rows) and result["role"] == "active")
    print(f"\n{result['unanswered']} of {result['sent']} requests unanswered within "
          f"{RELOAD_TIMEOUT * 1000:.0f} ms over {len(rows)} reloads at "
          f"{result['rate']:,.0f} requests/s (target 0 at ≥ {RELOAD_WANTED:,}/s: "
          f"{verdict(met)})")
    return result | {"met": met}


def reloadVersions(salesPort: int, otherPort: int, addedPort: int,
                   count: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """
    The configurations a reload run goes through: the first, then C{count}
    changes in turn: SALES's port changed, an instance added, that instance
    removed.
    """
    sales = {"name": "SALES", "tcp": salesPort}
    versions: list[tuple[str, list[dict[str, Any]]]] = [("start", [sales])]
    for number in range(count):
        change = ("port changed", "instance added", "instance removed")[number % 3]
        if change == "port changed":
            sales = {"name": "SALES",
                     "tcp": otherPort if sales["tcp"] == salesPort else salesPort}
            versions.append((change, [sales]))
        elif change == "instance added":
            versions.append((change, [sales, {"name": "ADDED", "tcp": addedPort}]))
        else:
            versions.append((change, [sales]))
    return versions


def reloadUnderLoad(node: NodeProcess, address: str,
                    versions: list[tuple[str, list[dict[str, Any]]]],
                    write: Callable[[list[dict[str, Any]]], None]) -> dict[str, Any]:
    """Stream requests for SALES while each later version is written and SIGHUP sent."""
    stream = RequestStream((address, BROWSER_PORT), InstanceRequest("SALES").encode(),
                           rate=RELOAD_RATE, timeout=RELOAD_TIMEOUT)
    hups: list[float] = []

    def reload(instances: list[dict[str, Any]]) -> Callable[[], None]:
        def act() -> None:
            write(instances)
            os.kill(node.pid, signal.SIGHUP)
            hups.append(time.monotonic())
        return act

    actions = [(RELOAD_SPACING * (n + 1), reload(instances))
               for n, (_, instances) in enumerate(versions[1:])]
    duration = RELOAD_SPACING * (len(versions) + 1)
    exchanges = stream.run(duration, at=actions)
    log = node.log()
    rows = []
    for number, ((change, instances), at) in enumerate(zip(versions[1:], hups, strict=True), 1):
        window = [e for e in exchanges if at <= e.sentAt < at + RELOAD_WINDOW]
        port = instances[0]["tcp"]
        applied = [e.answeredAt for e in exchanges if e.sentAt >= at
                   and e.answeredAt is not None and tcpOf(e.reply) == port]
        rows.append({"reload": number, "change": change, "port": port,
                     "answered": sum(e.answeredAt is not None for e in window),
                     "unanswered": sum(e.answeredAt is None for e in window),
                     "slowest_s": slowest(window),
                     "applied_s": min(applied) - at
                     if applied and change == "port changed" else None})
    inWindow = [any(at <= e.sentAt < at + RELOAD_WINDOW for at in hups) for e in exchanges]
    during = [e for e, flag in zip(exchanges, inWindow, strict=True) if flag]
    otherwise = [e for e, flag in zip(exchanges, inWindow, strict=True) if not flag]
    latencies = [e.answeredAt - e.sentAt for e in exchanges if e.answeredAt is not None]
    return {"sent": len(exchanges), "rate": len(exchanges) / duration,
            "unanswered": sum(e.answeredAt is None for e in exchanges),
            "median_s": summary(latencies)["median"], "slowest_during_s": slowest(during),
            "slowest_otherwise_s": slowest(otherwise),
            "reloads_applied": log.count("Reloaded "),
            "reloads_failed": log.count("Reload failed"),
            "role": roleIn(log) if node.process and node.process.poll() is None else "dead",
            "reloads": rows}


def slowest(exchanges: Sequence[Exchange]) -> float | None:
    """The longest time to an answer among C{exchanges}, or None if none was answered."""
    times = [e.answeredAt - e.sentAt for e in exchanges if e.answeredAt is not None]
    return max(times) if times else None
