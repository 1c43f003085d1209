"""
C{cluster_cost}: what N passives cost the active, on a simulated network.

One active and N passives (real L{NodeService}s, as in the deterministic
cluster tests) share the address 127.0.0.1 of a L{FakeNetwork}; every
passive sends a KeepAlive every 0.25 s.  The benchmark counts the
datagrams and bytes arriving at the active's cluster port, per simulated
second, and the time the active spends handling them: its
C{Membership.received} and C{Membership._tick} are wrapped with
C{time.perf_counter}, so that the passives' own work (they run in the same
process) is left out.  The whole process's CPU per simulated second is
reported beside it.

The simulation runs on L{HeapClock}: Twisted's C{Clock} sorts its whole list
of calls at every C{callLater}, which costs O(pending calls) and would make
a thousand nodes crawl and blur the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import pstats
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from bench.common import Settings
from srp.cli import formatTable
from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from srp.wire.cluster import HEADER_SIZE, TAG_SIZE, KeepAlive, KeepAliveAck
from srp.wire.mcsqlr import BROWSER_PORT

HOST = "127.0.0.1"
INTERVAL = 0.25
MISSES = 3
#: Simulated seconds given to N passives to start and join, at most.
SETTLE_LIMIT = 10.0


class HeapClock(Clock):
    """
    A L{Clock} whose pending calls are a heap: O(log n) per C{callLater}.

    Each call runs with the clock set to its own time (Twisted's C{Clock}
    runs every call due within an C{advance} at the end time).  Cancelled
    calls stay in the heap until their time comes and are skipped then.
    """

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._order = itertools.count()

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,
                  **kw: object) -> IDelayedCall:
        call = DelayedCall(self.rightNow + delay, callable, args, kw, lambda c: None,
                           self._push, self.seconds)
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.time, next(self._order), call))

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return [c for _, _, c in self._heap if not (c.cancelled or c.called)]

    def advance(self, amount: float) -> None:
        end = self.rightNow + amount
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or when != call.time:
                continue  # cancelled, or reset to another time (pushed again then)
            if call.delayed_time:
                call.activate_delay()
                self._push(call)
                continue
            self.rightNow = max(self.rightNow, when)
            call.called = 1
            call.func(*call.args, **call.kw)
        self.rightNow = end


class CountingNetwork(FakeNetwork):
    """A L{FakeNetwork} that counts what arrives at, and leaves, one (host, port)."""

    def __init__(self, watched: tuple[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watched = watched
        #: The active's own (ephemeral) cluster socket, whose sends count too.
        self.alsoFrom: tuple[str, int] | None = None
        self.arrived: Counter[int] = Counter()
        self.arrivedBytes: Counter[int] = Counter()
        self.left = 0
        self.leftBytes = 0

    def reset(self) -> None:
        self.arrived.clear()
        self.arrivedBytes.clear()
        self.left = self.leftBytes = 0

    def send(self, source: tuple[str, int], destination: tuple[str, int],
             datagram: bytes) -> None:
        if source == self.watched or source == self.alsoFrom:
            self.left += 1
            self.leftBytes += len(datagram)
        super().send(source, destination, datagram)

    def _deliver(self, source: tuple[str, int], destination: tuple[str, int],
                 datagram: bytes) -> None:
        if destination == self.watched and datagram:
            self.arrived[datagram[0]] += 1
            self.arrivedBytes[datagram[0]] += len(datagram)
        super()._deliver(source, destination, datagram)


class Stopwatch:
    """
    Accumulates the time spent in the functions it wraps; with a C{profile},
    also profiles them (once C{profiling} is set).
    """

    def __init__(self, profile: cProfile.Profile | None = None) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.profile = profile
        self.profiling = False

    def wrap(self, function: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any) -> None:
            profile = self.profile if self.profiling else None
            start = time.perf_counter()
            if profile is not None:
                profile.enable()
            try:
                function(*args)
            finally:
                if profile is not None:
                    profile.disable()
                self.seconds += time.perf_counter() - start
                self.calls += 1
        return timed


def registrationsFor(index: int) -> tuple[Registration, ...]:
    """Node C{index}'s registrations, as in the cluster tests: its own, and SHARED on even ones."""
    own = Registration(InstanceInfo(f"HOST{index}", f"N{index}", tcp=20000 + index % 40000))
    shared = Registration(InstanceInfo(f"HOST{index}", "SHARED", tcp=30000 + index % 30000),
                          priority=index % 65536)
    return (own, shared) if index % 2 == 0 else (own,)


def node(network: FakeNetwork, index: int) -> NodeService:
    """A node of the simulated cluster (not started)."""
    config = NodeConfig(listen=(HOST,), port=BROWSER_PORT, instances=registrationsFor(index),
                        cluster=ClusterConfig(name="sim", interval=INTERVAL, misses=MISSES))
    return NodeService(config, network.reactor(HOST), nodeId=network.random.getrandbits(64) | 1)


def simulate(passives: int, seconds: float, seed: int = 1,
             profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """
    Run an active and C{passives} passives; measure C{seconds} simulated seconds
    (and profile the active's work then, into C{profile}).
    """
    clock = HeapClock()
    network = CountingNetwork((HOST, BROWSER_PORT), clock=clock, seed=seed)
    stopwatch = Stopwatch(profile)
    active = node(network, 0)
    membership = active.membership
    # Bound methods are looked up when the node binds its ports and starts
    # its ticker, so wrapping the instance's attributes now catches both.
    membership.received = stopwatch.wrap(membership.received)  # type: ignore[method-assign]
    membership._tick = stopwatch.wrap(membership._tick)  # type: ignore[method-assign]
    active.startService()
    clock.advance(1.0)
    if active.role != "active":
        raise RuntimeError(f"the first node is {active.role}, not active")
    network.alsoFrom = membership._socketPort.getHost().host, \
        membership._socketPort.getHost().port
    # The passives start at random moments within one KeepAlive interval, as
    # nodes started independently would.
    starter = random.Random(seed)
    nodes: list[NodeService] = []
    for index in range(1, passives + 1):
        clock.callLater(starter.uniform(0, INTERVAL), lambda i=index: nodes.append(
            started(node(network, i))))
    settled = 0.0
    while settled < SETTLE_LIMIT:
        clock.advance(0.25)
        settled += 0.25
        if (len(nodes) == passives and all(n.role == "passive" for n in nodes)
                and len(membership.current.passives) == passives):
            break
    else:
        roles = Counter(n.role for n in nodes)
        raise RuntimeError(f"{passives} passives did not settle in {SETTLE_LIMIT:g} simulated "
                           f"s: {dict(roles)}, the active knows "
                           f"{len(membership.current.passives)}")
    clock.advance(2 * INTERVAL)  # steady state: every passive has sent KeepAlives since joining
    network.reset()
    stopwatch.seconds, stopwatch.calls, stopwatch.profiling = 0.0, 0, True
    counters = Counter(membership.counters)
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    steps = max(1, round(seconds / 0.05))
    for _ in range(steps):
        clock.advance(seconds / steps)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    keepAlives = network.arrived[KeepAlive.opcode]
    changed = {k: v - counters[k] for k, v in membership.counters.items() if v != counters[k]}
    roles = Counter(n.role for n in nodes)
    result = {
        "passives": passives, "simulated_s": seconds, "settle_s": settled,
        "keepalives_per_s": keepAlives / seconds,
        "keepalive_bytes_per_s": network.arrivedBytes[KeepAlive.opcode] / seconds,
        "datagrams_in_per_s": sum(network.arrived.values()) / seconds,
        "bytes_in_per_s": sum(network.arrivedBytes.values()) / seconds,
        "datagrams_out_per_s": network.left / seconds,
        "bytes_out_per_s": network.leftBytes / seconds,
        "ack_bytes": HEADER_SIZE + TAG_SIZE
        + len(KeepAliveAck(tuple(membership.current.passives)).payload()),
        "active_cpu_per_s": stopwatch.seconds / seconds,
        "active_calls": stopwatch.calls,
        "active_us_per_keepalive": stopwatch.seconds / keepAlives * 1e6 if keepAlives else None,
        "process_cpu_per_s": cpu / seconds, "wall_per_s": wall / seconds,
        "active_counters": changed, "roles": dict(roles),
    }
    for service in [active, *nodes]:
        service.membership.halt()
    return result


def started(service: NodeService) -> NodeService:
    service.startService()
    return service


def cluster_cost(settings: Settings) -> dict[str, Any]:
    """KeepAlive traffic and the active's CPU with 10, 100 and 1,000 passives (simulated)."""
    rows = []
    for passives in (0, *settings.passives):
        # As many simulated seconds as make settings.keepalives KeepAlives: a
        # thousand passives cost the simulation (mostly the passives decoding
        # their KeepAliveAcks) about 15 s of CPU per simulated second.
        seconds = min(100.0, max(2 * INTERVAL, settings.keepalives * INTERVAL / max(passives, 1)))
        print(f"cluster_cost: {passives} passives, {seconds:g} simulated s ...",
              file=sys.stderr, flush=True)
        rows.append(simulate(passives, seconds))
    base = rows[0]
    for row in rows:
        row["process_cpu_over_0"] = row["process_cpu_per_s"] - base["process_cpu_per_s"]
    print(formatTable(
        ["PASSIVES", "SIM S", "KEEPALIVES/S IN", "KEEPALIVE B/S IN", "ALL DGRAMS/S IN",
         "ALL B/S IN", "B/S OUT", "ACK BYTES", "ACTIVE CPU/SIM S", "ACTIVE µs/KEEPALIVE",
         "PROCESS CPU/SIM S", "PROCESS CPU OVER 0"],
        [[str(r["passives"]), f"{r['simulated_s']:g}", f"{r['keepalives_per_s']:,.0f}",
          f"{r['keepalive_bytes_per_s']:,.0f}", f"{r['datagrams_in_per_s']:,.0f}",
          f"{r['bytes_in_per_s']:,.0f}", f"{r['bytes_out_per_s']:,.0f}",
          f"{r['ack_bytes']:,}", f"{r['active_cpu_per_s'] * 1000:,.1f} ms",
          "-" if r["active_us_per_keepalive"] is None
          else f"{r['active_us_per_keepalive']:,.1f}",
          f"{r['process_cpu_per_s'] * 1000:,.0f} ms",
          f"{r['process_cpu_over_0'] * 1000:,.0f} ms"] for r in rows],
    ))
    print(f"\n(SIM S: simulated seconds measured; KeepAlive interval {INTERVAL:g} s; "
          "ACTIVE CPU is the time spent in the active's Membership.received() and ._tick(); "
          "PROCESS CPU includes every passive)")
    overloaded = [r["passives"] for r in rows if r["active_cpu_per_s"] >= 1.0]
    if overloaded:
        print(f"With {', '.join(map(str, overloaded))} passives the active needs more than one "
              "CPU: a real active could not keep up.")
    return {"rows": rows}


def main() -> None:
    """C{python -m bench.cluster_cost --profile 1000}: where the active's time goes."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_cost")
    parser.add_argument("--profile", type=int, metavar="PASSIVES", required=True)
    parser.add_argument("--seconds", type=float, default=0.5, help="simulated seconds")
    options = parser.parse_args()
    profile = cProfile.Profile()
    result = simulate(options.profile, options.seconds, profile=profile)
    print(f"{result['passives']} passives, {options.seconds:g} simulated s: "
          f"{result['keepalives_per_s'] * options.seconds:,.0f} KeepAlives handled by the "
          "active, profiled:")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(16)


if __name__ == "__main__":
    main()
