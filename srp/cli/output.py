"""
What the C{srp} command prints: aligned tables, JSON, one-line errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, TextIO

from srp.client.browser import Answer
from srp.client.resolver import Resolution
from srp.wire import (
    InstanceInfo,
    InstancesResponse,
)


class CommandError(Exception):
    """A command failed; the message is printed as-is on stderr."""


def formatTable(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers, each column as wide as its widest cell."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        .rstrip() for line in lines
    )


def instanceJSON(info: InstanceInfo) -> dict[str, Any]:
    """An instance as a JSON object."""
    return {
        "server": info.serverName,
        "instance": info.instanceName,
        "version": info.version,
        "clustered": info.isClustered,
        "tcp": info.tcp,
        "np": info.np,
        "via": None if info.via is None else {
            "netbios": info.via.netbios,
            "addresses": [{"nic": a.nic, "port": a.port} for a in info.via.addresses],
        },
        "other": dict(info.other),
    }


_HEADERS = ("SERVER", "INSTANCE", "VERSION", "CLUSTERED", "TCP", "NP", "VIA")


def _row(info: InstanceInfo) -> list[str]:
    return [
        info.serverName, info.instanceName, info.version,
        "yes" if info.isClustered else "no",
        "-" if info.tcp is None else str(info.tcp),
        info.np or "-",
        "-" if info.via is None else info.via.encode(),
    ]


def printAnswers(answers: Sequence[Answer], asJSON: bool, out: TextIO,
                 withSource: bool = False) -> None:
    """Print the instances of C{answers} as a table or as JSON."""
    found = [
        (answer.source, info)
        for answer in answers
        if isinstance(answer.response, InstancesResponse)
        for info in answer.response.instances
    ]
    if asJSON:
        objects = [
            ({"source": source[0]} if withSource else {}) | instanceJSON(info)
            for source, info in found
        ]
        out.write(json.dumps(objects, indent=2) + "\n")
        return
    headers = (("SOURCE",) if withSource else ()) + _HEADERS
    rows = [([source[0]] if withSource else []) + _row(info) for source, info in found]
    out.write(formatTable(headers, rows) + "\n")



def printResolution(resolution: Resolution, asJSON: bool, out: TextIO) -> None:
    """Print the places of a resolution, best first, as a table or as JSON."""
    if asJSON:
        out.write(json.dumps([
            {"host": c.host, "priority": c.priority,
             "node": f"{c.nodeId:016x}" if resolution.extended else None,
             "down": c.down if resolution.extended else None}
            | instanceJSON(c.info) for c in resolution.candidates], indent=2) + "\n")
        return
    rows = [[c.host, str(c.priority), *_row(c.info)] for c in resolution.candidates]
    out.write(formatTable(("HOST", "PRIORITY", *_HEADERS), rows) + "\n")



def duration(seconds: float) -> str:
    """C{seconds} as days, hours, minutes and seconds: C{2d 3h 4m 5s}."""
    whole = int(seconds)
    parts = [(whole // 86400, "d"), (whole // 3600 % 24, "h"), (whole // 60 % 60, "m")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join([*shown, f"{whole % 60}s"])


def healthOf(registration: dict[str, Any]) -> str:
    """A registration's health for the status table: up or down, and since when if known."""
    state = "down" if registration.get("down") else "up"
    since = registration.get("since")
    if since is None:
        return state
    return f"{state} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"

def jsonError(message: str, out: TextIO) -> None:
    """With C{--json}, an error is a JSON object on stdout too, for a pipeline reading it."""
    out.write(json.dumps({"error": message}) + "\n")
    out.flush()
