"""
The C{srp proxy} benchmarks.

- C{proxy_throughput}: bulk throughput (64 MiB each way) and request/response
  round trips (100-byte lines) through a real C{srp proxy} process, through
  a bare Twisted splice (L{twisted.protocols.portforward}, in a process of
  its own) and straight to the server, in the same run, alternating.
- C{proxy_failover}: two nodes of one cluster register an instance, the
  primary and a standby, each served by a process of its own; C{kill -9} of
  the primary's server, and the time until a new connection through the
  proxy is answered by the standby.

    python -m bench.run --only proxy_throughput --only proxy_failover
    python -m bench.proxy serve HOST PORT          # the bulk/echo server
    python -m bench.proxy portforward PORT HOST PORT   # the bare splice
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import ROOT, Settings, ms, pinTo, stopPid, summary, verdict, waitUntil
from srp.cli import formatTable
from srp.testing.processes import (
    NodeProcess,
    ProxyProcess,
    TaggedEchoProcess,
    freeLoopbackAddress,
    freeTCPPort,
    primaryAndStandby,
    writeNodeConfig,
)
from srp.wire import InstanceRequest, InstancesResponse, WireError, decodeResponse
from srp.wire.mcsqlr import BROWSER_PORT

#: Targets: srp proxy's throughput at least this share of portforward's, its
#: round trip at most this multiple of portforward's.
THROUGHPUT_RATIO = 0.8
LATENCY_RATIO = 1.2
#: Target of proxy_failover: median time to the next answered connection.
FAILOVER_MEDIAN = 0.050
#: Bytes moved each way per bulk run, and round trips per latency run.
BULK = 64 * 1024 * 1024
ROUND_TRIPS = 2000
LINE = b"x" * 99 + b"\n"
CHUNK = 256 * 1024
READY = "ready"


def _serveConnection(connection: socket.socket) -> None:
    """C{DOWN n}: send n bytes; C{UP n}: read n bytes, answer C{OK}; else echo lines."""
    with connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = connection.makefile("rb")
        block = bytes(CHUNK)
        while line := reader.readline():
            command, _, size = line.partition(b" ")
            if command == b"DOWN":
                left = int(size)
                while left > 0:
                    connection.sendall(block[:left])
                    left -= min(left, CHUNK)
            elif command == b"UP":
                left = int(size)
                while left > 0:
                    left -= len(reader.read(min(left, CHUNK)))
                connection.sendall(b"OK\n")
            else:
                connection.sendall(line)


def serve(host: str, port: int) -> None:
    """The benchmark's server: a thread per connection (L{_serveConnection})."""
    server = socket.create_server((host, port))
    print(READY, flush=True)
    while True:
        threading.Thread(target=_serveConnection, args=(server.accept()[0],),
                         daemon=True).start()


def portforward(listenPort: int, host: str, port: int) -> None:
    """The bare Twisted splice: L{twisted.protocols.portforward.ProxyFactory}."""
    from twisted.internet import reactor
    from twisted.protocols.portforward import ProxyFactory

    reactor.listenTCP(listenPort, ProxyFactory(host, port),  # type: ignore[arg-type]
                      interface="127.0.0.1")
    print(READY, flush=True)
    reactor.run()


def _child(*argv: str) -> subprocess.Popen[bytes]:
    """C{python -m bench.proxy ARGV}, once it says it is ready."""
    process = subprocess.Popen([sys.executable, "-m", "bench.proxy", *argv], cwd=ROOT,
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    if process.stdout.readline().decode().strip() != READY:
        stopPid(process)
        raise RuntimeError(f"bench.proxy {' '.join(argv)} did not start")
    return process


def _connect(target: tuple[str, int]) -> tuple[socket.socket, Any]:
    """A connection to C{target}, once a first round trip went through."""
    connection = socket.create_connection(target, timeout=30)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = connection.makefile("rb")
    connection.sendall(LINE)
    if reader.readline() != LINE:
        raise RuntimeError(f"no echo through {target}")
    return connection, reader


def bulk(target: tuple[str, int], direction: str, size: int) -> float:
    """Bytes/s of C{size} bytes carried C{direction} (C{down}: to the client)."""
    connection, reader = _connect(target)
    with connection:
        started = time.perf_counter()
        if direction == "down":
            connection.sendall(b"DOWN %d\n" % size)
            left = size
            while left > 0:
                got = len(reader.read1(CHUNK))
                if not got:
                    raise RuntimeError("closed during a bulk transfer")
                left -= got
        else:
            connection.sendall(b"UP %d\n" % size)
            block = bytes(CHUNK)
            left = size
            while left > 0:
                connection.sendall(block[:left])
                left -= min(left, CHUNK)
            if reader.readline() != b"OK\n":
                raise RuntimeError("no OK after a bulk upload")
        return size / (time.perf_counter() - started)


def roundTrips(target: tuple[str, int], count: int) -> float:
    """The median seconds of C{count} request/response round trips of one line."""
    connection, reader = _connect(target)
    times = []
    with connection:
        for _ in range(count):
            started = time.perf_counter()
            connection.sendall(LINE)
            if reader.readline() != LINE:
                raise RuntimeError("wrong echo")
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def proxy_throughput(settings: Settings) -> dict[str, Any]:
    """srp proxy against twisted.protocols.portforward: bulk MiB/s and round-trip µs."""
    size = BULK // 8 if settings.quick else BULK
    trips = ROUND_TRIPS // 4 if settings.quick else ROUND_TRIPS
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="srp-bench-") as scratch:
        directory = Path(scratch)
        address = freeLoopbackAddress()
        serverPort = freeTCPPort(address)
        node = proxy = None
        try:
            children.append(_child("serve", address, str(serverPort)))
            config = writeNodeConfig(directory / "node.toml", [address],
                                     [{"name": "BENCH", "tcp": serverPort}])
            node = NodeProcess(config, directory / "node.log").start()
            proxy = ProxyProcess(f"127.0.0.1:{freeTCPPort('127.0.0.1')}", f"{address}/BENCH",
                                 directory / "proxy.log", "--prefer", "tcp").start()
            forwardPort = freeTCPPort("127.0.0.1")
            children.append(_child("portforward", str(forwardPort), address,
                                   str(serverPort)))
            # The splices on CPU 0; the client and the server on CPU 1.
            for pid in (proxy.pid, children[1].pid):
                pinTo(pid, 0 if settings.pin else None)
            for pid in (children[0].pid,):
                pinTo(pid, 1 if settings.pin else None)
            targets = {"srp proxy": ("127.0.0.1", proxy.port),
                       "portforward": ("127.0.0.1", forwardPort),
                       "direct": (address, serverPort)}
            rows = _measure(settings, targets, size, trips)
        finally:
            for child in children:
                stopPid(child)
            for process in (proxy, node):
                if process is not None:
                    process.stop()
    return _report(rows)


def _measure(settings: Settings, targets: dict[str, tuple[str, int]], size: int,
             trips: int) -> list[dict[str, Any]]:
    """Each path in turn, the order reversed every other round, C{settings.rounds} rounds."""
    rows = []
    for number in range(1, settings.rounds + 1):
        for name in list(targets)[::1 if number % 2 else -1]:
            print(f"proxy_throughput round {number}/{settings.rounds}: {name} ...",
                  file=sys.stderr, flush=True)
            target = targets[name]
            rows.append({"round": number, "path": name, "down": bulk(target, "down", size),
                         "up": bulk(target, "up", size), "rtt": roundTrips(target, trips)})
    return rows


def _report(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    mib = 1024 * 1024
    print(formatTable(["ROUND", "PATH", "DOWN MiB/s", "UP MiB/s", "ROUND TRIP µs"], [
        [str(r["round"]), r["path"], f"{r['down'] / mib:,.0f}", f"{r['up'] / mib:,.0f}",
         f"{r['rtt'] * 1e6:.1f}"] for r in rows]))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    medians = {p: {k: statistics.median(r[k] for r in rows if r["path"] == p)
                   for k in ("down", "up", "rtt")} for p in paths}
    srp, bare = medians["srp proxy"], medians["portforward"]
    ratios = {"down": srp["down"] / bare["down"], "up": srp["up"] / bare["up"],
              "rtt": srp["rtt"] / bare["rtt"]}
    print()
    print(formatTable(["PATH", "MEDIAN DOWN MiB/s", "MEDIAN UP MiB/s", "MEDIAN ROUND TRIP µs"],
                      [[p, f"{m['down'] / mib:,.0f}", f"{m['up'] / mib:,.0f}",
                        f"{m['rtt'] * 1e6:.1f}"] for p, m in medians.items()]))
    okThroughput = min(ratios["down"], ratios["up"]) >= THROUGHPUT_RATIO
    okLatency = ratios["rtt"] <= LATENCY_RATIO
    print(f"\nsrp proxy / portforward throughput: down {ratios['down']:.2f}, up "
          f"{ratios['up']:.2f} (target >= {THROUGHPUT_RATIO}: {verdict(okThroughput)})")
    print(f"srp proxy / portforward round trip: {ratios['rtt']:.2f} "
          f"(target <= {LATENCY_RATIO}: {verdict(okLatency)}); srp proxy adds "
          f"{(srp['rtt'] - medians['direct']['rtt']) * 1e6:.1f} µs to a direct round trip, "
          f"portforward {(bare['rtt'] - medians['direct']['rtt']) * 1e6:.1f} µs")
    return {"medians": medians, "ratios": ratios, "rounds": list(rows),
            "targets": {"throughput": THROUGHPUT_RATIO, "latency": LATENCY_RATIO},
            "met": okThroughput and okLatency}


def proxy_failover(settings: Settings) -> dict[str, Any]:
    """kill -9 of the primary's server: time to an answered new connection through srp proxy."""
    trials: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="srp-bench-") as scratch, primaryAndStandby(
            Path(scratch), "bench") as (address, servers):
        for number in range(1, settings.trials + 1):
            print(f"proxy_failover trial {number}/{settings.trials} ...", file=sys.stderr,
                  flush=True)
            trials.append(_failoverTrial(Path(scratch), address, servers[0], number))
    print(formatTable(["TRIAL", "OPEN CONNECTION CLOSED AFTER (ms)",
                       "NEXT CONNECTION ANSWERED AFTER (ms)"],
                      [[str(n), ms(t["closed"]), ms(t["next"])]
                       for n, t in enumerate(trials, 1)]))
    nexts = summary([t["next"] for t in trials])
    ok = nexts["median"] < FAILOVER_MEDIAN
    print(f"\nnext connection: median {ms(nexts['median'])} ms, max {ms(nexts['max'])} ms "
          f"(target: median < {FAILOVER_MEDIAN * 1000:.0f} ms: {verdict(ok)})")
    return {"next": nexts, "closed": summary([t["closed"] for t in trials]),
            "trials": trials, "target": FAILOVER_MEDIAN, "met": ok}


def _failoverTrial(directory: Path, address: str, primary: TaggedEchoProcess,
                   number: int) -> dict[str, float]:
    """One kill -9, through a fresh proxy (so a fresh cache) connected to the live primary."""
    waitUntil(lambda: _answeredWith(address, primary.port), 10,
              "the nodes to answer with the primary again")
    with ProxyProcess(f"127.0.0.1:{freeTCPPort('127.0.0.1')}", f"{address}/SALES",
                      directory / f"proxy{number}.log", "--cluster", "bench",
                      "--prefer", "tcp") as proxy:
        connection = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with connection:
            connection.sendall(b"before\n")
            if connection.recv(100) != b"primary:before\n":
                raise RuntimeError("the first connection did not reach the primary")
            killed = time.perf_counter()
            primary.kill()
            if connection.recv(100) != b"":
                raise RuntimeError("the open connection was answered after the kill")
            closed = time.perf_counter() - killed
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as after:
            after.sendall(b"after\n")
            answer = after.recv(100)
            answered = time.perf_counter() - killed
        if answer != b"standby:after\n":
            raise RuntimeError(f"the next connection got {answer!r}")
    primary.start()
    return {"closed": closed, "next": answered}


def _answeredWith(address: str, port: int) -> bool:
    """Whether a plain [MC-SQLR] answer for SALES at C{address} names C{port}."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        probe.sendto(InstanceRequest("SALES").encode(), (address, BROWSER_PORT))
        try:
            reply = decodeResponse(probe.recv(65535))
        except (OSError, WireError):
            return False
    return isinstance(reply, InstancesResponse) and reply.instances[0].tcp == port


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "serve":
        serve(arguments[0], int(arguments[1]))
    else:
        portforward(int(arguments[0]), arguments[1], int(arguments[2]))
