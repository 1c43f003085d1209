"""
The client NAM's benchmarks: C{cached_resolve}, C{failover_gap} and
C{cold_resolves}.

Each runs L{bench.client_worker} as a process of its own (a Twisted reactor
runs once per process), ended by its PID when it finishes or fails, and
prints the table of what it measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, Settings, ms, stopPid, summary, verdict
from srp.cli import formatTable

#: Target of cached_resolve: srp: (none verifier) at most this many times TCP4ClientEndpoint.
CONNECT_RATIO = 1.2
#: Targets of failover_gap: median gap after kill -9, and gap after SIGSTOP.
KILL_MEDIAN = 0.050
STOP_GAP = 1.5
#: Resolves made at once by cold_resolves.
COLD_RESOLVES = 1000


def runWorker(mode: str, arguments: list[str], settings: Settings,
              timeout: float) -> dict[str, Any]:
    """Run C{python -m bench.client_worker MODE ...}; return its RESULT."""
    with tempfile.TemporaryDirectory(prefix="srp-bench-worker-") as scratch:
        pidfile = Path(scratch) / "nodes.pid"
        command = [sys.executable, "-m", "bench.client_worker", mode, *arguments,
                   "--pin" if settings.pin else "--no-pin", "--pidfile", str(pidfile)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   cwd=ROOT)
        try:
            out, _ = process.communicate(timeout=timeout)
        finally:
            stopPid(process)
            stopOrphans(pidfile)
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"bench.client_worker {mode} failed ({process.returncode}): "
                           f"{out.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def stopOrphans(pidfile: Path) -> None:
    """
    End, by PID, any node the worker started and did not end (it ends them
    itself unless it was killed outright); only processes that are still
    srp benchmark nodes, in case a PID was reused.
    """
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        pid = int(line)
        try:
            commandLine = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        if b"echo_node.py" not in commandLine and b"connect_server.py" not in commandLine:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def cached_resolve(settings: Settings) -> dict[str, Any]:
    """Warm-cache resolve µs/call, and srp: connects/s against TCP4ClientEndpoint."""
    rounds = settings.rounds
    result = runWorker("connect", ["--connects", str(settings.connects), "--rounds",
                                   str(rounds), "--resolves", "20000"], settings,
                       timeout=120 + rounds * settings.connects * 0.01)
    resolveUs = statistics.median(result["resolve_us"])
    succeedUs = statistics.median(result["succeed_us"])
    print(formatTable(
        ["CALL", "µs/CALL (median of rounds)", "ROUNDS x CALLS"],
        [["ClusterResolver.resolve, warm cache", f"{resolveUs:.2f}",
          f"{len(result['resolve_us'])} x {result['resolve_calls']:,}"],
         ["twisted.internet.defer.succeed (the floor)", f"{succeedUs:.2f}",
          f"{len(result['succeed_us'])} x {result['resolve_calls']:,}"]]))
    rows = result["rounds"]
    print()
    print(formatTable(
        ["ROUND", "ENDPOINT", "CONNECTS", "CONNECTS/S", "µs/CONNECT", "CLIENT CPU µs/CONNECT",
         "SLOWEST (ms)", "OVER 100 ms"],
        [[str(r["round"]), r["endpoint"], str(r["connects"]),
          f"{r['connects'] / r['wall_s']:,.0f}", f"{r['wall_s'] / r['connects'] * 1e6:.0f}",
          f"{r['cpu_s'] / r['connects'] * 1e6:.0f}", ms(r["slowest_s"]), str(r["over_100ms"])]
         for r in rows]))
    names = ["tcp4", "srp-none", "srp-hello"]
    perConnect = {n: statistics.median(r["wall_s"] / r["connects"] for r in rows
                                       if r["endpoint"] == n) for n in names}
    cpuPer = {n: statistics.median(r["cpu_s"] / r["connects"] for r in rows
                                   if r["endpoint"] == n) for n in names}
    # The ratio of each round (same conditions), then the median of them.
    ratios = {n: statistics.median(
        next(r["wall_s"] for r in rows if r["round"] == k and r["endpoint"] == n)
        / next(r["wall_s"] for r in rows if r["round"] == k and r["endpoint"] == "tcp4")
        for k in {r["round"] for r in rows}) for n in names}
    print()
    print(formatTable(
        ["ENDPOINT", "MEDIAN CONNECTS/S", "MEDIAN µs/CONNECT", "MEDIAN CPU µs/CONNECT",
         "TIME / TCP4 (median of rounds)"],
        [[n, f"{1 / perConnect[n]:,.0f}", f"{perConnect[n] * 1e6:.0f}",
          f"{cpuPer[n] * 1e6:.0f}", f"{ratios[n]:.2f}"] for n in names]))
    met = ratios["srp-none"] <= CONNECT_RATIO
    print(f"\nsrp: with the none verifier takes {ratios['srp-none']:.2f}x the time of "
          f"TCP4ClientEndpoint (target <= {CONNECT_RATIO}: {verdict(met)}); the hello verifier "
          f"adds {(perConnect['srp-hello'] - perConnect['srp-none']) * 1e6:.0f} µs per connect "
          f"({ratios['srp-hello']:.2f}x TCP4)")
    return {"resolve_us": resolveUs, "succeed_us": succeedUs, "per_connect_s": perConnect,
            "cpu_per_connect_s": cpuPer, "ratio_to_tcp4": ratios, "met": met,
            "target": CONNECT_RATIO, "worker": result}


def failover_gap(settings: Settings) -> dict[str, Any]:
    """
    Application-visible gap when the primary of an instance is killed (-9) or
    stopped, with another node, the standby's node or the primary's node the
    cluster's active.
    """
    result = runWorker("failover", ["--trials", str(settings.trials)], settings,
                       timeout=120 + settings.trials * 60)
    rows = result["rows"]
    print(formatTable(
        ["ACTIVE", "TRIAL", "FAULT", "LONGEST ANSWER GAP (ms)", "FailoverClient.gaps (ms)",
         "FAULT → LINK DOWN (ms)", "FAULT → FIRST B ANSWER (ms)", "SERVERS", "LOST"],
        [[r["topology"], str(r["trial"]), r["fault"], ms(r["longest_gap_s"]),
          ms(r.get("failover_gap_s")), ms(r.get("down_after_s")), ms(r.get("first_b_s")),
          ",".join(r.get("servers", [])) or r.get("error", "?"), str(r.get("lost", "-"))]
         for r in rows]))
    stats: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    tableRows = []
    topologies = list(dict.fromkeys(r["topology"] for r in rows))
    for topology in topologies:
        stats[topology] = {}
        for fault in ("kill -9", "SIGSTOP"):
            mine = [r for r in rows if r["fault"] == fault and r["topology"] == topology]
            stats[topology][fault] = {
                key: summary([r[key] for r in mine if r.get(key) is not None])
                for key in ("longest_gap_s", "failover_gap_s", "first_b_s")}
            for key, label in (("longest_gap_s", "LineRequester.longestGap"),
                               ("failover_gap_s", "FailoverClient.gaps"),
                               ("first_b_s", "fault → first answer from B")):
                s = stats[topology][fault][key]
                tableRows.append([topology, fault, label, str(s["n"]), ms(s["median"]),
                                  ms(s["p90"]), ms(s["max"])])
    print()
    print(formatTable(["ACTIVE", "FAULT", "MEASURE", "TRIALS", "MEDIAN (ms)", "P90 (ms)",
                       "MAX (ms)"], tableRows))
    failed = [r for r in rows if r["longest_gap_s"] is None]
    lost = sum(r.get("lost", 0) for r in rows)
    killMedian = max(stats[t]["kill -9"]["longest_gap_s"]["median"] for t in topologies)
    stopMax = max(stats[t]["SIGSTOP"]["longest_gap_s"]["max"] for t in topologies)
    stopMedian = max(stats[t]["SIGSTOP"]["longest_gap_s"]["median"] for t in topologies)
    killOk = bool(killMedian < KILL_MEDIAN)
    stopOk = bool(stopMax < STOP_GAP) and not any(r["fault"] == "SIGSTOP" for r in failed)
    print(f"\nThe gap is LineRequester.longestGap(after=fault - 0.1 s): the longest time "
          f"between two answers the application got (requests at 100/s).\n"
          f"kill -9: worst median of the set-ups {ms(killMedian)} ms against the "
          f"{KILL_MEDIAN * 1000:.0f} ms target: {verdict(killOk)}; SIGSTOP: worst median "
          f"{ms(stopMedian)} ms, max {ms(stopMax)} ms against {STOP_GAP * 1000:.0f} ms: "
          f"{verdict(stopOk)}; {len(failed)} trials failed, {lost} requests lost")
    return {"stats_s": stats, "kill_met": killOk, "stop_met": stopOk, "failed": len(failed),
            "lost": lost, "rows": rows}


def cold_resolves(settings: Settings) -> dict[str, Any]:
    """Datagrams sent for 1,000 concurrent resolves of one cold name, 3 cluster addresses."""
    rounds = max(1, min(settings.rounds, 5))
    result = runWorker("cold", ["--resolves", str(COLD_RESOLVES), "--rounds", str(rounds)],
                       settings, timeout=120)
    rows = result["rows"]
    addresses = result["addresses"]
    print(f"cluster addresses {', '.join(addresses)}; an srp node on "
          f"{result['node_address']} only")
    print(formatTable(
        ["ROUND", "CLUSTER DIALECT", "RESOLVES", "CORRECT", "DATAGRAMS SENT", "ALL DONE IN (ms)"],
        [[str(r["round"]), r["dialect"], str(r["resolves"]), str(r["correct"]), str(r["sent"]),
          ms(r["seconds"])] for r in rows]))
    target = len(addresses)
    worst = max(r["sent"] for r in rows)
    allCorrect = all(r["correct"] == r["resolves"] for r in rows)
    met = worst <= target and allCorrect
    print(f"\nat most {worst} datagrams for {COLD_RESOLVES:,} concurrent resolves; target one "
          f"per cluster address ({target}): {verdict(met)}")
    return {"max_sent": worst, "target": target, "met": met, "rows": rows}
