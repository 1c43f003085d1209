"""
What every benchmark module shares: the L{Settings}, stopping processes by
their PID, and summary statistics.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from srp.testing.processes import stopProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Settings:
    """How long and how hard the benchmarks run."""

    #: Rounds per server; the servers alternate within each round.
    rounds: int = 5
    #: Measured seconds of each load-generator run (after the warm-up).
    seconds: float = 4.0
    warmup: float = 0.5
    #: Outstanding requests the load generator keeps in flight.
    window: int = 64
    #: Registered instances (srp) and distinct names asked for.
    instances: int = 10_000
    #: Pin each server to CPU 0 and the load generator to CPU 1.
    pin: bool = True
    #: Runs repeated at most, in all, because other load on the machine
    #: slowed them (neither process had a whole CPU).
    retries: int = 5
    #: Faults of each kind injected by takeover and failover_gap.
    trials: int = 20
    #: Graceful stops of the active in handover.
    handovers: int = 10
    #: Sequential connections per endpoint and round in cached_resolve.
    connects: int = 2000
    #: Passive counts simulated by cluster_cost.
    passives: tuple[int, ...] = (10, 100, 1000)
    #: KeepAlives measured per passive count in cluster_cost (at least 0.5 simulated s).
    keepalives: int = 4000
    #: Everything smaller, to check that the benchmarks run (not for figures).
    quick: bool = False
    #: SIGHUP reloads in sighup_reload.
    reloads: int = 10
    #: Seconds over which health_cost measures a node's CPU time.
    cpuSeconds: float = 10.0


#: The settings of C{--quick}: a smoke run of every benchmark in about a minute.
QUICK = {"rounds": 1, "seconds": 1.0, "trials": 3, "handovers": 2, "connects": 300,
         "passives": (10, 100), "keepalives": 400, "quick": True, "reloads": 3,
         "cpuSeconds": 3.0}

Benchmark = Callable[[Settings], dict[str, Any]]


def pinTo(pid: int, cpu: int | None) -> None:
    """Restrict process C{pid} to CPU C{cpu}; do nothing if C{cpu} is None or unavailable."""
    if cpu is None or cpu not in os.sched_getaffinity(0):
        return
    os.sched_setaffinity(pid, {cpu})


def stopPid(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """End C{process} by its PID: SIGTERM, then SIGKILL after C{timeout} seconds."""
    stopProcess(process, timeout)


def percentile(values: Sequence[float], share: float) -> float:
    """The C{share} (0-1) percentile of C{values}, nearest rank: p90 of 20 values is the 18th."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, median, p90, min and max of C{values} (NaN for an empty list)."""
    if not values:
        return {"n": 0, "median": math.nan, "p90": math.nan, "min": math.nan,
                "max": math.nan}
    return {"n": len(values), "median": statistics.median(values),
            "p90": percentile(values, 0.9), "min": min(values), "max": max(values)}


def ms(seconds: float | None) -> str:
    """C{seconds} as milliseconds (C{875.3}), or C{-}."""
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f}"


def verdict(ok: bool) -> str:
    """C{met} or C{MISSED}."""
    return "met" if ok else "MISSED"


def waitUntil(predicate: Callable[[], bool], timeout: float, what: str | Callable[[], str],
              step: float = 0.02) -> None:
    """
    Poll C{predicate} until it holds; after C{timeout} seconds raise
    L{RuntimeError} naming C{what} (or what C{what()} says then).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for "
                               f"{what if isinstance(what, str) else what()}")
        time.sleep(step)


def runWorkerMain(work: Callable[[Any, Path], Awaitable[dict[str, Any]]], prefix: str,
                  cleanUp: Callable[[], None]) -> None:
    """
    The body of a benchmark worker process: run C{work(reactor, scratch)} on
    a reactor (C{scratch} a temporary directory named C{prefix}...), print
    its result as one line C{RESULT <json>} on stdout, and C{cleanUp()}
    (end every process it started) whatever happens.
    """
    async def run(reactor: Any) -> None:
        with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
            try:
                result = await work(reactor, Path(scratch))
            finally:
                cleanUp()
        print("RESULT " + json.dumps(result), flush=True)

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    finally:
        cleanUp()


def workerRows(module: str, arguments: Sequence[str], timeout: float,
               prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    """
    Run C{python -m MODULE ARGUMENTS} (through C{prefix}, such as C{ip netns
    exec HOST}), a worker that prints C{RESULT <json>}; return that JSON's
    C{rows}.  The worker runs in a session of its own, ended with every
    process in it should it outlive C{timeout}.
    """
    process = subprocess.Popen([*prefix, sys.executable, "-m", module, *arguments],
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{module} failed ({process.returncode}): {out.decode()[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(lines[-1][len("RESULT "):])["rows"]
    return rows
