"""
C{transports}: round-trip latency and bulk throughput of tcp, np and via on
loopback, in the same run.

    python -m bench.transports                       # the figures
    python -m bench.transports --quick               # a smoke run, a few seconds
    python -m bench.transports --rounds 10 --no-pin
    python -m bench.transports --profile client.prof --server-profile server.prof

The target (the transports issue): on one host, np and via beat tcp on
latency, and via's framing and credits cost at most 10% of tcp's bulk
throughput.

L{bench.transport_server} runs as a process of its own (an echo server and
a sink on each transport, on a free 127.0.0.N); the client is this process,
on the default reactor.  Each transport gets one echo connection and one
sink connection, and the rounds interleave the transports (in a rotating
order) so that noise on the machine hits all of them alike:

  - B{latency}: 4,000 sequential round trips of a 64-byte message per
    transport (write, wait for all 64 bytes to come back); median and p99
    in µs, the client's CPU time per round trip, and in how many rounds the
    transport's median beat tcp's;
  - B{bulk}: 256 MiB per transport in 1 MiB transfers, each written at once
    and acknowledged by the server's application once all of it has
    arrived; MB/s (10^6 bytes/s), and the client's and the server's CPU
    time per MiB (the scheduler's count, C{/proc/PID/schedstat}).

The ratios to tcp are taken within the run: the latency ratio is that of
the medians, the bulk ratio the median of the ratios of each round.

tcp uses C{TCP_NODELAY} (L{detectDeadPeers}) on both sides; np is
L{srp.transports.np} as it is (AF_UNIX with the kernel's default buffers).  via uses the
stream adapter (C{transport.write} and C{dataReceived}) on both sides: the
interface protocols written for TCP, srp's relays and its hello verifier
use; a 1 MiB write becomes 16 messages of the default 64 KiB buffers.
C{via} is the default provider, which takes its AF_UNIX path on one host;
C{via-tcp} is the same provider with that path turned off (C{local=False}),
to show what the path is worth.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from bench.common import stopPid
from srp.cli import formatTable
from srp.transports.np import PipeEndpoint, socketPath
from srp.transports.tcp import detectDeadPeers
from srp.transports.via import EmulatedVIProvider, VIAClientEndpoint, VIAConnection

ROOT = Path(__file__).resolve().parent.parent
#: Bytes of each latency message.
MESSAGE = 64
#: Bytes of each bulk transfer: 1 MiB.
TRANSFER = 1 << 20
#: Round trips and MiB per transport, at least, over all rounds.
ROUND_TRIPS = 4000
BULK_MIB = 256
#: Rounds unless told otherwise.
ROUNDS = 8
#: The targets: via's bulk throughput at least this share of tcp's; np's and
#: via's median round trip below tcp's (L{beatsTcp}).
BULK_TARGET = 0.9
#: Every transport measured, and the ones the targets speak of.
TRANSPORTS = ("tcp", "np", "via", "via-tcp")
#: CPUs of the server and of this process, when pinning.
SERVER_CPU, CLIENT_CPU = 0, 1
#: Seconds the server may take to start, and the whole measurement at most.
START_TIMEOUT = 20.0
LIMIT = 900.0

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    rounds: int = ROUNDS
    roundTrips: int = ROUND_TRIPS
    mib: int = BULK_MIB
    pin: bool = True
    transports: tuple[str, ...] = TRANSPORTS
    profile: str | None = None
    serverProfile: str | None = None

    @property
    def perRound(self) -> int:
        """Round trips per transport and round."""
        return math.ceil(self.roundTrips / self.rounds)

    @property
    def transfersPerRound(self) -> int:
        """1 MiB transfers per transport and round."""
        return math.ceil(self.mib * (1 << 20) / TRANSFER / self.rounds)


def planFrom(settings: Any) -> Plan:
    """A L{Plan} from C{bench.run}'s settings (or any object with some of its fields)."""
    if getattr(settings, "quick", False):
        return Plan(rounds=2, roundTrips=200, mib=8, pin=getattr(settings, "pin", True))
    return Plan(rounds=max(2, int(getattr(settings, "rounds", ROUNDS))),
                pin=bool(getattr(settings, "pin", True)))


# The client's protocols.


class Pinger(Protocol):
    """Sequential round trips of one message; records each in ns."""

    def __init__(self) -> None:
        self.message = bytes(range(MESSAGE))
        self.samples: list[int] = []
        self.missing = 0
        self.left = 0
        self.sent = 0
        self.done: Deferred[None] | None = None
        self.lost: Deferred[None] = Deferred()

    def run(self, count: int) -> Deferred[None]:
        """Make C{count} round trips; fires when the last is back."""
        self.left = count
        self.done = Deferred()
        self._send()
        return self.done

    def _send(self) -> None:
        self.missing = MESSAGE
        self.sent = time.perf_counter_ns()
        self.transport.write(self.message)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.missing -= len(data)
        if self.missing > 0:
            return
        self.samples.append(time.perf_counter_ns() - self.sent)
        if self.missing < 0:
            raise RuntimeError("the echo server sent more than it was sent")
        self.left -= 1
        if self.left:
            self._send()
        else:
            done, self.done = self.done, None
            assert done is not None
            done.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)
        if self.done is not None:
            done, self.done = self.done, None
            done.errback(reason)


class Bulk(Protocol):
    """1 MiB transfers, one at a time, each acknowledged by the server's application."""

    def __init__(self) -> None:
        self.payload = os.urandom(TRANSFER)
        self.left = 0
        self.done: Deferred[None] | None = None
        self.lost: Deferred[None] = Deferred()

    def run(self, count: int) -> Deferred[None]:
        """Make C{count} transfers; fires when the last is acknowledged."""
        self.left = count
        self.done = Deferred()
        self.transport.write(self.payload)  # type: ignore[union-attr]
        return self.done

    def dataReceived(self, data: bytes) -> None:
        for _ in data:
            self.left -= 1
            if self.left > 0:
                self.transport.write(self.payload)  # type: ignore[union-attr]
            elif self.left == 0:
                done, self.done = self.done, None
                assert done is not None
                done.callback(None)
            else:
                raise RuntimeError("the sink acknowledged more transfers than were made")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)
        if self.done is not None:
            done, self.done = self.done, None
            done.errback(reason)


# Measuring, on the reactor.


def endpointFor(reactor: Any, server: dict[str, Any], transport: str,
                role: str) -> IStreamClientEndpoint:
    """The client endpoint of C{role} (echo or sink) on C{transport}."""
    address = server["address"]
    if transport == "tcp":
        return TCP4ClientEndpoint(reactor, address, server["tcp"][role], timeout=5)
    if transport == "np":
        path = socketPath(server["np"][role], Path(server["np"]["directory"]))
        return PipeEndpoint(reactor, path, timeout=5)
    provider = EmulatedVIProvider(local=False) if transport == "via-tcp" else None
    return VIAClientEndpoint(reactor, [(address, server["via"][role])], timeout=5,
                             provider=provider)


def pathOf(protocol: Protocol) -> str:
    """What a connection runs on: TCP or AF_UNIX (for via: underneath its frames)."""
    transport = protocol.transport
    handle = transport.getHandle()  # type: ignore[union-attr]
    families = {socket.AF_INET: "TCP", socket.AF_INET6: "TCP", socket.AF_UNIX: "AF_UNIX"}
    family = families.get(handle.family, "?") if isinstance(handle, socket.socket) else "?"
    return f"VIA frames over {family}" if isinstance(transport, VIAConnection) else family


def cpuSeconds(pid: int) -> float:
    """
    CPU seconds process C{pid}'s main thread has run (Linux: the scheduler's
    own count in nanoseconds, C{/proc/PID/schedstat}; not clock ticks).
    """
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


async def measure(reactor: Any, server: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Connect to every transport, warm up, then run the interleaved rounds."""
    names = list(plan.transports)
    pingers: dict[str, Pinger] = {}
    sinks: dict[str, Bulk] = {}
    for name in names:
        pingers[name] = await connectProtocol(endpointFor(reactor, server, name, "echo"),
                                              Pinger())
        sinks[name] = await connectProtocol(endpointFor(reactor, server, name, "sink"), Bulk())
        if name == "tcp":
            detectDeadPeers(pingers[name].transport)  # type: ignore[arg-type]
            detectDeadPeers(sinks[name].transport)  # type: ignore[arg-type]
    paths = {name: pathOf(pingers[name]) for name in names}
    for name in names:  # warm-up, not counted
        await pingers[name].run(max(50, plan.perRound // 5))
        await sinks[name].run(2)
        pingers[name].samples.clear()
    latencyCpu = {name: 0.0 for name in names}
    roundMedians: dict[str, list[float]] = {name: [] for name in names}
    bulkRounds: dict[str, list[float]] = {name: [] for name in names}
    bulkCpu = {name: [0.0, 0.0] for name in names}  # client, server
    for number in range(plan.rounds):
        order = names[number % len(names):] + names[:number % len(names)]
        gc.collect()
        for name in order:
            cpu = time.process_time()
            await pingers[name].run(plan.perRound)
            latencyCpu[name] += time.process_time() - cpu
            roundMedians[name].append(statistics.median(pingers[name].samples[-plan.perRound:]))
        for name in order:
            cpu, serverCpu = time.process_time(), cpuSeconds(server["pid"])
            started = time.perf_counter()
            await sinks[name].run(plan.transfersPerRound)
            bulkRounds[name].append(time.perf_counter() - started)
            bulkCpu[name][0] += time.process_time() - cpu
            bulkCpu[name][1] += cpuSeconds(server["pid"]) - serverCpu
    protocols: list[Pinger | Bulk] = [*pingers.values(), *sinks.values()]
    for protocol in protocols:
        protocol.transport.loseConnection()  # type: ignore[union-attr]
    for protocol in protocols:
        await protocol.lost
    return {"paths": paths,
            "latency_ns": {name: pingers[name].samples for name in names},
            "latency_cpu_s": latencyCpu, "latency_round_median_ns": roundMedians,
            "bulk_round_s": bulkRounds, "bulk_cpu_s": bulkCpu}


def defaultReactor() -> Any:
    """The default reactor, if it can still run in this process."""
    from twisted.internet import reactor

    if getattr(reactor, "_startedBefore", False):
        raise RuntimeError("the reactor already ran in this process: run the transports "
                           "benchmark in a process of its own (python -m bench.transports)")
    return reactor


def runOnReactor(start: Callable[[Any], Coroutine[Any, Any, T]], limit: float) -> T:
    """Run C{start(reactor)} on the default reactor for at most C{limit} seconds."""
    reactor = defaultReactor()
    outcome: list[T | Failure] = []

    def go() -> None:
        done = Deferred.fromCoroutine(start(reactor))
        timer = reactor.callLater(limit, done.cancel)

        def finish(result: T | Failure) -> None:
            if timer.active():
                timer.cancel()
            outcome.append(result)
            reactor.stop()

        done.addBoth(finish)

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    if not outcome:
        raise RuntimeError("the reactor stopped before the measurement finished")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


# The server process.




def pinTo(pid: int, cpu: int) -> bool:
    """Restrict process C{pid} to CPU C{cpu} if this process may use it."""
    if cpu not in os.sched_getaffinity(0):
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


def startServer(plan: Plan, log: Any) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start L{bench.transport_server}; return it and what it listens on."""
    command = [sys.executable, "-m", "bench.transport_server", "--transfer", str(TRANSFER)]
    if plan.serverProfile:
        command += ["--profile", os.path.abspath(plan.serverProfile)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                               stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = b""
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if selector.select(max(0.0, deadline - time.monotonic())):
                    chunk = os.read(process.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    line += chunk
        if not line.endswith(b"\n"):
            log.seek(0)
            raise RuntimeError(f"bench.transport_server did not start: {log.read()[-2000:]!r}")
        return process, json.loads(line)
    except BaseException:
        stopPid(process)
        raise


# Figures.


def percentile(values: Sequence[float], share: float) -> float:
    """The C{share} (0-1) percentile of C{values}, nearest rank."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1] if ordered else math.nan


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def beatsTcp(latency: dict[str, Any], plan: Plan) -> bool:
    """
    The latency target: a median below tcp's over the run, and in most
    rounds too (a ratio of 0.99 won in half the rounds is noise, not a win).
    """
    return bool(latency["to_tcp"] < 1 and latency["rounds_faster"] * 2 > plan.rounds)


def summarize(raw: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Medians, p99s, MB/s and the ratios to tcp, from what L{measure} returned."""
    names = list(raw["latency_ns"])
    latency = {}
    for name in names:
        samples = [ns / 1000 for ns in raw["latency_ns"][name]]
        latency[name] = {"n": len(samples), "median_us": statistics.median(samples),
                         "p99_us": percentile(samples, 0.99),
                         "cpu_us": raw["latency_cpu_s"][name] / len(samples) * 1e6}
    transfer = plan.transfersPerRound * TRANSFER
    bulk = {}
    for name in names:
        rounds = raw["bulk_round_s"][name]
        mib = len(rounds) * transfer / (1 << 20)
        clientCpu, serverCpu = raw["bulk_cpu_s"][name]
        bulk[name] = {"mib": mib, "mb_s": len(rounds) * transfer / sum(rounds) / 1e6,
                      "client_cpu_ms_per_mib": clientCpu / mib * 1e3,
                      "server_cpu_ms_per_mib": serverCpu / mib * 1e3,
                      "round_mb_s": [transfer / s / 1e6 for s in rounds]}
    for name in names:
        latency[name]["to_tcp"] = latency[name]["median_us"] / latency["tcp"]["median_us"]
        latency[name]["rounds_faster"] = sum(
            mine < tcp for mine, tcp in zip(raw["latency_round_median_ns"][name],
                                            raw["latency_round_median_ns"]["tcp"], strict=True))
        # The ratio within each round (same conditions), then the median of them.
        bulk[name]["to_tcp"] = statistics.median(
            mine / tcp for mine, tcp in zip(bulk[name]["round_mb_s"],
                                            bulk["tcp"]["round_mb_s"], strict=True))
    targets = {}
    for name in ("np", "via"):
        if name in names:
            targets[f"{name}_latency_beats_tcp"] = beatsTcp(latency[name], plan)
    if "via" in names:
        targets["via_bulk_within_10pct_of_tcp"] = bulk["via"]["to_tcp"] >= BULK_TARGET
    return {"latency": latency, "bulk": bulk, "targets": targets, "paths": raw["paths"]}


def report(summary: dict[str, Any], plan: Plan) -> None:
    """Print the tables and the verdicts."""
    latency, bulk, paths = summary["latency"], summary["bulk"], summary["paths"]
    print(f"Round trips of {MESSAGE} bytes: {plan.rounds} rounds x {plan.perRound} per "
          "transport, interleaved")
    print(formatTable(
        ["TRANSPORT", "PATH", "ROUND TRIPS", "MEDIAN µs", "P99 µs", "CLIENT CPU µs/RT",
         "MEDIAN / TCP", "ROUNDS FASTER THAN TCP"],
        [[name, paths[name], f"{v['n']:,}", f"{v['median_us']:.1f}", f"{v['p99_us']:.1f}",
          f"{v['cpu_us']:.1f}", f"{v['to_tcp']:.2f}",
          "-" if name == "tcp" else f"{v['rounds_faster']}/{plan.rounds}"]
         for name, v in latency.items()]))
    print()
    print(f"Bulk: 1 MiB transfers, {plan.rounds} rounds x {plan.transfersPerRound} per "
          "transport, interleaved; each acknowledged by the server's application")
    print(formatTable(
        ["TRANSPORT", "MiB", "MB/s", "SLOWEST ROUND MB/s", "FASTEST ROUND MB/s",
         "CPU ms/MiB CLIENT", "SERVER", "MB/s / TCP (median of rounds)"],
        [[name, f"{v['mib']:.0f}", f"{v['mb_s']:,.0f}", f"{min(v['round_mb_s']):,.0f}",
          f"{max(v['round_mb_s']):,.0f}", f"{v['client_cpu_ms_per_mib']:.2f}",
          f"{v['server_cpu_ms_per_mib']:.2f}", f"{v['to_tcp']:.2f}"]
         for name, v in bulk.items()]))
    print()
    for name in ("np", "via"):
        if name in latency:
            ratio = latency[name]["to_tcp"]
            print(f"{name} latency: median {ratio:.2f}x tcp's, faster in "
                  f"{latency[name]['rounds_faster']} of {plan.rounds} rounds (target: below "
                  f"tcp's, in most rounds: {verdict(beatsTcp(latency[name], plan))})")
    if "via" in bulk:
        ratio = bulk["via"]["to_tcp"]
        print(f"via bulk throughput: {ratio:.2f}x tcp's (target >= {BULK_TARGET}: "
              f"{verdict(ratio >= BULK_TARGET)})")
    if "np" in bulk:
        print(f"np bulk throughput: {bulk['np']['to_tcp']:.2f}x tcp's")


def run(plan: Plan) -> dict[str, Any]:
    """Start the server, measure on the reactor, stop the server; print and return figures."""
    unknown = set(plan.transports) - set(TRANSPORTS)
    if unknown or "tcp" not in plan.transports:
        raise ValueError(f"transports must include tcp, from {', '.join(TRANSPORTS)}")
    defaultReactor()  # before starting anything
    affinity = os.sched_getaffinity(0)
    with tempfile.TemporaryFile() as log:
        process, server = startServer(plan, log)
        try:
            pinned = plan.pin and pinTo(process.pid, SERVER_CPU) and pinTo(0, CLIENT_CPU)
            profiler = cProfile.Profile() if plan.profile else None
            if profiler is not None:
                profiler.enable()
            try:
                raw = runOnReactor(lambda reactor: measure(reactor, server, plan), LIMIT)
            finally:
                if profiler is not None and plan.profile:
                    profiler.disable()
                    profiler.dump_stats(plan.profile)
        finally:
            os.sched_setaffinity(0, affinity)
            stopPid(process)
    summary = summarize(raw, plan)
    report(summary, plan)
    summary["pinned"] = bool(pinned)
    summary["plan"] = {"rounds": plan.rounds, "round_trips_per_round": plan.perRound,
                       "transfers_per_round": plan.transfersPerRound,
                       "message_bytes": MESSAGE, "transfer_bytes": TRANSFER}
    return summary


def transports(settings: Any) -> dict[str, Any]:
    """The benchmark, as C{bench.run} calls it (once per process: it runs the reactor)."""
    return run(planFrom(settings))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transports",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--round-trips", type=int, default=ROUND_TRIPS,
                        help="round trips per transport over all rounds")
    parser.add_argument("--mib", type=int, default=BULK_MIB,
                        help="MiB per transport over all rounds")
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        help="comma-separated, from " + ", ".join(TRANSPORTS))
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the server to CPU 0 and this process to CPU 1")
    parser.add_argument("--quick", action="store_true", help="a smoke run, not for figures")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the client into FILE")
    parser.add_argument("--server-profile", metavar="FILE",
                        help="cProfile the server into FILE")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    options = parser.parse_args(argv)
    plan = Plan(rounds=max(1, options.rounds), roundTrips=options.round_trips,
                mib=options.mib, pin=options.pin,
                transports=tuple(t.strip() for t in options.transports.split(",")),
                profile=options.profile, serverProfile=options.server_profile)
    if options.quick:
        plan = Plan(rounds=2, roundTrips=200, mib=8, pin=plan.pin, transports=plan.transports,
                    profile=plan.profile, serverProfile=plan.serverProfile)
    summary = run(plan)
    if options.json:
        Path(options.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
