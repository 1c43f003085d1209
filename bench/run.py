"""
C{make bench}: run every benchmark in L{BENCHMARKS} and print a table for each.

    python -m bench.run                    # all of them, default settings (about 4 minutes)
    python -m bench.run --rounds 5 --seconds 10 --no-pin
    python -m bench.run --only resolve_throughput
    python -m bench.run --only takeover --only handover --trials 30
    python -m bench.run --quick            # a smoke run of all of them, under a minute

Each benchmark is a function taking the L{Settings}; it prints its own small
aligned table and returns a JSON-able summary, which is also written to
C{bench/results/NAME.json}.  This module is the orchestrator and holds
C{resolve_throughput}; the others live in their own modules:
L{bench.takeover} (C{takeover}, C{sigstop}, C{handover}), L{bench.cluster_cost},
L{bench.client} (C{cached_resolve}, C{failover_gap}, C{cold_resolves}, run
in L{bench.client_worker} processes), L{bench.health} (C{instance_down},
C{sighup_reload}, C{health_cost}), L{bench.metrics} (C{metrics_scrape}),
L{bench.proxy} (C{proxy_throughput}, C{proxy_failover}), L{bench.matrix}
(C{fault_matrix}, run in a L{bench.matrix_worker} process), L{bench.etcd_propagation}
(C{etcd_propagation}, C{etcd_takeover}), L{bench.etcd_scale} (C{etcd_scale},
C{etcd_throughput}), L{bench.pushed_moves} (C{pushed_moves}, run in a process of its
own).
docs/benchmarks.md says what they measure and holds the figures measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import twisted
from bench.bare_responder import CANNED_REPLY, READY
from bench.client import cached_resolve, cold_resolves, failover_gap
from bench.cluster_cost import cluster_cost
from bench.common import QUICK, RESULTS, ROOT, Benchmark, Settings, pinTo, stopPid
from bench.etcd_propagation import etcd_propagation, etcd_takeover
from bench.etcd_scale import etcd_scale, etcd_throughput
from bench.health import health_cost, instance_down, sighup_reload
from bench.loadgen import instanceName, instanceRequest
from bench.matrix import fault_matrix
from bench.metrics import Scraper, metrics_scrape
from bench.proxy import proxy_failover, proxy_throughput
from bench.pushed_moves import pushed_moves
from bench.takeover import handover, sigstop, takeover
from srp.cli import formatTable
from srp.testing.processes import (
    NodeProcess,
    freeLoopbackAddress,
    freeTCPPort,
    writeNodeConfig,
)
from srp.wire import InstancesResponse, decodeResponse
from srp.wire.mcsqlr import BROWSER_PORT

__all__ = ["BENCHMARKS", "Benchmark", "Settings", "main", "resolve_throughput"]

#: The target of resolve_throughput: srp's median at least this share of the bare one's.
TARGET_RATIO = 0.8
#: The target of resolve_throughput with metrics on: at least this share of srp's without.
METRICS_RATIO = 0.95
#: The [limits] table of the srp node of resolve_throughput: no reply budgets.
UNLIMITED = {"limits": {"reply_rate_per_source": 0, "reply_rate": 0}}
#: A process that used this share of a CPU or more limited the rate.
SATURATED = 0.9
#: The servers of resolve_throughput: bare, srp, and srp with its metrics on.
NAMES = ["bare", "srp", "metrics"]


class BareProcess:
    """The baseline responder (L{bench.bare_responder}) as its own process."""

    def __init__(self, host: str, port: int, logPath: Path) -> None:
        self.host = host
        self.port = port
        self.logPath = logPath
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> BareProcess:
        """Start it and wait for its ready line; raise if it exits or times out."""
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.bare_responder", self.host, str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.logPath.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"bare responder did not start: {self.logPath.read_text()}")

    @property
    def pid(self) -> int:
        """The process id of the running responder."""
        assert self.process is not None, "not started"
        return self.process.pid

    def stop(self) -> None:
        """End it by its PID."""
        if self.process is not None:
            stopPid(self.process)


Server = TypeVar("Server", NodeProcess, BareProcess)


def startOnFreeAddress(start: Callable[[str], Server], attempts: int = 3) -> tuple[str, Server]:
    """
    Call C{start} with a 127.0.0.N address whose port 1434 is free; return both.

    Someone else may take the address between the check and the bind: try
    another one then.
    """
    for attempt in range(attempts):
        host = freeLoopbackAddress(BROWSER_PORT)
        try:
            server = start(host)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            continue
        return host, server
    raise AssertionError("unreachable")


def probe(host: str, port: int, datagram: bytes, timeout: float = 2.0) -> bytes:
    """Send C{datagram} to C{host:port} and return the first reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(datagram, (host, port))
        return sock.recv(65535)


def runLoad(host: str, serverPid: int, settings: Settings, seed: int) -> dict[str, Any]:
    """Run L{bench.loadgen} against C{host} once, in its own process; return its JSON."""
    command = [
        sys.executable, "-m", "bench.loadgen", "--target", f"{host}:{BROWSER_PORT}",
        "--instances", str(settings.instances), "--window", str(settings.window),
        "--seconds", str(settings.seconds), "--warmup", str(settings.warmup),
        "--seed", str(seed), "--server-pid", str(serverPid),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        pinTo(process.pid, 1 if settings.pin else None)
        out, err = process.communicate(timeout=settings.warmup + settings.seconds + 30)
    finally:
        stopPid(process)
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {err.decode()}")
    result: dict[str, Any] = json.loads(out)
    return result


def loadRounds(settings: Settings, servers: Mapping[str, tuple[str, int]],
               during: Callable[[str], AbstractContextManager[Any]] = lambda name: nullcontext()
               ) -> list[dict[str, Any]]:
    """
    Run the load generator against each of C{servers} (name: address and
    PID) in turn, for C{settings.rounds} rounds, each round starting one
    server later, within C{during(name)}; repeat a run that other load on
    the machine slowed (up to C{settings.retries} in all).  One row a run.
    """
    names = list(servers)
    rows: list[dict[str, Any]] = []
    retries = settings.retries
    for number in range(1, settings.rounds + 1):
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            while True:
                print(f"round {number}/{settings.rounds}: {name} ...", file=sys.stderr,
                      flush=True)
                host, pid = servers[name]
                with during(name):
                    result = runLoad(host, pid, settings, seed=number)
                rows.append({"round": number, "server": name} | result | derived(result))
                if saturated(rows[-1]) != "none" or retries <= 0:
                    break
                retries -= 1
    return rows


def derived(result: dict[str, Any]) -> dict[str, float | None]:
    """Shares of a CPU used by the server and the load generator, and server µs per reply."""
    seconds, replies, cpu = result["seconds"], result["replies"], result["server_cpu_s"]
    return {
        "server_share": None if cpu is None or not seconds else cpu / seconds,
        "loadgen_share": result["cpu_s"] / seconds if seconds else None,
        "server_us": None if cpu is None or not replies else cpu / replies * 1e6,
    }


def nodeInstances(count: int) -> list[dict[str, Any]]:
    """
    The benchmark instances: INST00001 ... with TCP ports 10001 ..., not
    health-checked (no servers run behind them; health_cost measures checks).
    """
    return [{"name": instanceName(n), "tcp": 10_000 + n, "check": "none"}
            for n in range(1, count + 1)]


def resolve_throughput(settings: Settings) -> dict[str, Any]:
    """
    CLNT_UCAST_INST replies/s: srp serve (10,000 instances) against a bare Twisted responder.

    A third server, C{metrics}, is the same srp node with its Prometheus
    metrics on and scraped every second during its runs (L{Scraper}).
    Each runs as a process on its own loopback address; the load generator
    takes turns between them for C{settings.rounds} rounds, and repeats a
    run that other load on the machine slowed (up to C{settings.retries}).
    """
    servers: dict[str, NodeProcess | BareProcess] = {}
    with tempfile.TemporaryDirectory(prefix="srp-bench-") as scratch:
        try:
            directory = Path(scratch)

            metricsPorts: dict[str, int] = {}

            def node(host: str, name: str = "srp") -> NodeProcess:
                # No reply budgets: one load generator is one source, and this
                # measures what a reply costs, not the flood protection.
                tables: dict[str, dict[str, Any]] = dict(UNLIMITED)
                if name == "metrics":
                    metricsPorts[host] = freeTCPPort(host)
                    tables["metrics"] = {"listen": f"{host}:{metricsPorts[host]}"}
                config = writeNodeConfig(directory / f"{name}.toml", [host],
                                         nodeInstances(settings.instances), port=BROWSER_PORT,
                                         serverName="SRPBENCH", tables=tables)
                return NodeProcess(config, directory / f"{name}.log").start(timeout=120)

            hosts: dict[str, str] = {}
            hosts["srp"], servers["srp"] = startOnFreeAddress(node)
            hosts["metrics"], servers["metrics"] = startOnFreeAddress(
                lambda host: node(host, "metrics"))
            scrapeURL = (f"http://{hosts['metrics']}:{metricsPorts[hosts['metrics']]}"
                         "/metrics")
            hosts["bare"], servers["bare"] = startOnFreeAddress(
                lambda host: BareProcess(host, BROWSER_PORT, directory / "bare.log").start())
            for server in servers.values():
                pinTo(server.pid, 0 if settings.pin else None)

            # Both answer the first instance with the same datagram.
            first = instanceRequest(instanceName(1))
            # A node just started is busy for a few seconds: its 10,000
            # instances' first health checks fail (no server listens).
            srpReply = probe(hosts["srp"], BROWSER_PORT, first, timeout=10.0)
            reply = decodeResponse(srpReply)
            if not (isinstance(reply, InstancesResponse)
                    and [(i.instanceName, i.tcp) for i in reply.instances]
                    == [(instanceName(1), 10_001)]):
                raise RuntimeError(f"srp serve answered {reply!r}")
            if srpReply != CANNED_REPLY:
                print(f"note: srp replies {len(srpReply)} bytes, "
                      f"the bare responder {len(CANNED_REPLY)}")
            probe(hosts["bare"], BROWSER_PORT, first)
            if probe(hosts["metrics"], BROWSER_PORT, first, timeout=10.0) != srpReply:
                raise RuntimeError("srp serve with metrics on answers otherwise")

            rows = loadRounds(settings, {n: (hosts[n], servers[n].pid) for n in NAMES},
                              lambda name: Scraper(scrapeURL) if name == "metrics"
                              else nullcontext())
        finally:
            for server in servers.values():
                server.stop()

    names = tuple(NAMES)
    print(formatTable(
        ["ROUND", "SERVER", "REPLIES/S", "SENT", "REPLIES", "LOST", "SERVER CPU",
         "SERVER µs/REPLY", "LOADGEN CPU", "SATURATED"],
        [[str(r["round"]), r["server"], f"{r['replies_per_s']:,.0f}", str(r["sent"]),
          str(r["replies"]), str(r["lost"]), percent(r.get("server_share")),
          "-" if r.get("server_us") is None else f"{r['server_us']:.1f}",
          percent(r["loadgen_share"]), saturated(r)] for r in rows],
    ))
    # Runs in which neither process had a whole CPU were slowed by something
    # else on the machine; leave them out while each server has another one.
    clean = [r for r in rows if saturated(r) != "none"]
    used = clean if {r["server"] for r in clean} == set(names) else rows
    if len(used) < len(rows):
        print(f"\n{len(rows) - len(used)} of {len(rows)} runs were slowed by other load on the "
              "machine (SATURATED none) and are left out of the medians.")
    elif len(clean) < len(rows):
        print(f"\nWARNING: {len(rows) - len(clean)} of {len(rows)} runs were slowed by other "
              "load on the machine, too many to leave out: the figures understate the servers.")
    medians = {n: statistics.median(r["replies_per_s"] for r in used if r["server"] == n)
               for n in names}
    costs = {n: median([r.get("server_us") for r in used if r["server"] == n]) for n in names}
    lost = {n: sum(r["lost"] for r in rows if r["server"] == n) for n in names}
    ratio = medians["srp"] / medians["bare"] if medians["bare"] else 0.0
    metricsRatio = medians["metrics"] / medians["srp"] if medians["srp"] else 0.0
    costs["ratio"] = (None if costs["srp"] is None or costs["bare"] is None
                      else costs["bare"] / costs["srp"])
    print()
    print(formatTable(
        ["SERVER", "RUNS", "MEDIAN REPLIES/S", "MEDIAN SERVER µs/REPLY", "LOST"],
        [[n, str(sum(r["server"] == n for r in used)), f"{medians[n]:,.0f}",
          "-" if costs[n] is None else f"{costs[n]:.2f}", str(lost[n])] for n in names],
    ))
    verdict = "meets" if ratio >= TARGET_RATIO else "is BELOW"
    print(f"\nsrp / bare = {ratio:.2f} in replies/s ({verdict} the {TARGET_RATIO:.2f} target)")
    if costs["ratio"] is not None:
        print(f"bare / srp = {costs['ratio']:.2f} in server CPU time per reply")
    verdict = "meets" if metricsRatio >= METRICS_RATIO else "is BELOW"
    print(f"metrics on / off = {metricsRatio:.2f} in replies/s ({verdict} the "
          f"{METRICS_RATIO:.2f} target)")
    if costs["srp"] is not None and costs["metrics"] is not None:
        print(f"off / on = {costs['srp'] / costs['metrics']:.2f} in server CPU time per reply")
    return {"medians": medians, "server_us_per_reply": costs, "lost": lost, "ratio": ratio,
            "target": TARGET_RATIO, "metrics_ratio": metricsRatio,
            "metrics_target": METRICS_RATIO, "runs_used": len(used), "rounds": rows}


def percent(share: float | None) -> str:
    """C{share} (0.97) as a percentage (97%), or C{-} if unknown."""
    return "-" if share is None else f"{share:.0%}"


def median(values: Sequence[float | None]) -> float | None:
    """The median of C{values}, or None if any is unknown."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def saturated(row: dict[str, Any]) -> str:
    """
    Which side of a load run used (nearly) a whole CPU: C{server}, C{loadgen} or C{both}.

    C{none} means that something else on the machine took CPU time from
    both: such a run understates what the server can do.
    """
    busy = [name for name, key in (("server", "server_share"), ("loadgen", "loadgen_share"))
            if row.get(key) is not None and row[key] >= SATURATED]
    return {0: "none", 1: busy[0] if busy else "none", 2: "both"}[len(busy)]


def transports(settings: Settings) -> dict[str, Any]:
    """
    Round-trip latency and bulk throughput of tcp, np and via (L{bench.transports}),
    in a process of its own: it runs a reactor.
    """
    output = RESULTS / "transports.json"
    argv = [sys.executable, "-m", "bench.transports", "--json", str(output)]
    argv += ["--quick"] if settings.quick else []
    argv += [] if settings.pin else ["--no-pin"]
    result = subprocess.run(argv, cwd=ROOT, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"bench.transports exited with {result.returncode}")
    summary: dict[str, Any] = json.loads(output.read_text())
    return summary


#: Every benchmark C{make bench} runs, in order.
BENCHMARKS: list[Benchmark] = [resolve_throughput, takeover, sigstop, handover, cluster_cost,
                               cached_resolve, failover_gap, cold_resolves, transports,
                               instance_down, sighup_reload, health_cost, metrics_scrape,
                               proxy_throughput, proxy_failover, fault_matrix,
                               etcd_propagation, etcd_takeover, etcd_scale, etcd_throughput,
                               pushed_moves]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "twisted": twisted.__version__, "platform": platform.platform()}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen benchmarks."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Run srp's benchmarks (make bench); see docs/benchmarks.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=defaults.rounds,
                        help="rounds per server (resolve_throughput, they alternate), per "
                        "endpoint (cached_resolve), per dialect (cold_resolves, at most 5)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help="measured seconds of each run")
    parser.add_argument("--warmup", type=float, default=defaults.warmup,
                        help="unmeasured seconds before each run")
    parser.add_argument("--window", type=int, default=defaults.window,
                        help="requests the load generator keeps outstanding")
    parser.add_argument("--instances", type=int, default=defaults.instances,
                        help="instances registered and asked for")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=defaults.pin,
                        help="pin the servers to CPU 0 and the load generator or client "
                        "to CPU 1")
    parser.add_argument("--retries", type=int, default=defaults.retries,
                        help="runs repeated at most because other load slowed them")
    parser.add_argument("--trials", type=int, default=defaults.trials,
                        help="faults injected per kind (takeover, sigstop, failover_gap, "
                             "instance_down)")
    parser.add_argument("--handovers", type=int, default=defaults.handovers,
                        help="graceful stops of the active (handover)")
    parser.add_argument("--connects", type=int, default=defaults.connects,
                        help="sequential connections per endpoint and round (cached_resolve)")
    parser.add_argument("--passives", type=lambda text: tuple(int(n) for n in text.split(",")),
                        default=defaults.passives,
                        help="comma-separated passive counts (cluster_cost)")
    parser.add_argument("--keepalives", type=int, default=defaults.keepalives,
                        help="KeepAlives measured per passive count (cluster_cost)")
    parser.add_argument("--reloads", type=int, default=defaults.reloads,
                        help="SIGHUP reloads (sighup_reload)")
    parser.add_argument("--cpu-seconds", type=float, default=defaults.cpuSeconds,
                        help="seconds over which a node's CPU time is measured (health_cost)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: far fewer rounds, trials and connections, "
                        "no figures to quote; overrides the options above")
    parser.add_argument("--only", action="append", default=[],
                        choices=[b.__name__ for b in BENCHMARKS], help="run only this one")
    options = parser.parse_args(argv)
    settings = Settings(options.rounds, options.seconds, options.warmup, options.window,
                        options.instances, options.pin and len(os.sched_getaffinity(0)) >= 2,
                        options.retries, options.trials, options.handovers, options.connects,
                        options.passives, options.keepalives, reloads=options.reloads,
                        cpuSeconds=options.cpu_seconds)
    if options.quick:
        settings = dataclasses.replace(settings, **QUICK)  # type: ignore[arg-type]
    info = machine()
    print(f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
          f"Twisted {info['twisted']}; {settings}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    for benchmark in BENCHMARKS:
        if options.only and benchmark.__name__ not in options.only:
            continue
        print(f"\n== {benchmark.__name__}: {(benchmark.__doc__ or '').strip().splitlines()[0]}")
        summary = benchmark(settings)
        record = {"benchmark": benchmark.__name__, "machine": info,
                  "settings": asdict(settings), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        (RESULTS / f"{benchmark.__name__}.json").write_text(
            json.dumps(record | summary, indent=2) + "\n")
    print(f"\n(all run in {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
