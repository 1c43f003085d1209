"""
C{fault_matrix}: topologies x namings x paths x faults, each cell measured
over C{--trials} faults by L{bench.matrix_worker} (a process of its own,
in a session of its own: everything it starts is ended with it).

Each cell reports the longest application-visible gap after the fault
(between two answers, or from the fault to the first answer), requests
lost, answered twice, and answered from a place already replaced, as the
history checker (L{srp.testing.history}) reads each run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import asdict

from bench.common import Settings, ms, summary, verdict, workerRows
from bench.matrix_worker import TOPOLOGIES
from srp.cli import formatTable
from srp.testing.netns import lan

#: Targets: kill -9 (or a stop) of the primary's server, through srp:.
KILL_MEDIAN, KILL_MAX = 0.050, 0.150
#: Targets: SIGSTOP of the primary's server (a silent peer), with the default
#: answer timeout and with the documented shorter one.
STOP_MEDIAN, SHORT_STOP_MEDIAN = 1.1, 0.300
#: Target: a partition of the primary's host.
PARTITION_MEDIAN = 1.5
#: Seconds each trial of each cell may take, at most, before the run is ended.
CELL_TIMEOUT = 30.0


def runMatrix(trials: int, timeout: float,
              proxyIn: Sequence[str] = ()) -> list[dict[str, Any]]:
    """
    Every cell, C{trials} faults each: the one-host topologies from here, and
    three-hosts from a fourth network-namespace host of a LAN made for it.
    Through C{srp proxy} in the topologies C{proxyIn} only, if given.
    """
    common = ["--trials", str(trials), *(f"--proxy-in={t}" for t in proxyIn)]
    oneHost = [f"--topology={t}" for t in TOPOLOGIES if t != "three-hosts"]
    rows = workerRows("bench.matrix_worker", [*common, *oneHost], timeout)
    with lan(4) as hosts:
        servers, client = hosts[:3], hosts[3]
        rows += workerRows("bench.matrix_worker",
                           [*common, "--topology=three-hosts",
                            "--lan", json.dumps([asdict(h) for h in servers])],
                           timeout, prefix=client.command())
    return rows


def cells(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """The rows of each cell: (topology, naming, path, fault)."""
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["topology"], row["naming"], row["path"], row["fault"])
        grouped.setdefault(key, []).append(row)
    return grouped


def fault_matrix(settings: Settings) -> dict[str, Any]:
    """Every cell of the fault matrix, C{settings.trials} faults each (10 in C{make bench})."""
    trials = 1 if settings.quick else min(settings.trials, 10)
    rows = runMatrix(trials, timeout=600 + 24 * trials * CELL_TIMEOUT)
    table, results, misses = [], [], []
    for (topology, naming, path, fault), mine in cells(rows).items():
        gaps = summary([r["longest_gap_s"] for r in mine if "longest_gap_s" in r])
        lost = sum(r.get("lost", 0) for r in mine)
        stale = sum(r.get("stale", 0) for r in mine)
        failed = [r["error"] for r in mine if "error" in r]
        target = {"kill -9 server": (KILL_MEDIAN, KILL_MAX),
                  "server stops": (KILL_MEDIAN, KILL_MAX),
                  "SIGSTOP server": (STOP_MEDIAN, None),
                  "SIGSTOP server, answerTimeout=0.25": (SHORT_STOP_MEDIAN, None),
                  "partition of the primary's host": (PARTITION_MEDIAN, None)}.get(
                      fault, (None, None))
        met = (not failed and not lost and not stale
               and (target[0] is None or gaps["median"] < target[0])
               and (target[1] is None or gaps["max"] < target[1]))
        if not met:
            misses.append(f"{topology}/{naming}/{path}/{fault}")
        table.append([topology, naming, path, fault, str(len(mine)), ms(gaps["median"]),
                      ms(gaps["max"]), str(lost), str(stale),
                      str(sum(r.get("duplicated", 0) for r in mine)),
                      "; ".join(failed)[:60] or verdict(met)])
        results.append({"topology": topology, "naming": naming, "path": path, "fault": fault,
                        "trials": len(mine), "gap_s": gaps, "lost": lost, "stale": stale,
                        "errors": failed, "met": met})
    print(formatTable(["TOPOLOGY", "NAMING", "PATH", "FAULT", "TRIALS", "MEDIAN GAP (ms)",
                       "MAX GAP (ms)", "LOST", "STALE", "TWICE", "VERDICT"], table))
    print(f"\nTargets: kill -9 or a stop of the primary's server, median < "
          f"{KILL_MEDIAN * 1000:.0f} ms and max < {KILL_MAX * 1000:.0f} ms; SIGSTOP of it, "
          f"median < {STOP_MEDIAN * 1000:.0f} ms (< {SHORT_STOP_MEDIAN * 1000:.0f} ms with "
          f"answerTimeout=0.25); a partition of its host, median < "
          f"{PARTITION_MEDIAN * 1000:.0f} ms; every cell 0 lost and 0 stale. "
          f"Cells missed: {', '.join(misses) or 'none'}")
    return {"cells": results, "missed": misses, "rows": rows}
