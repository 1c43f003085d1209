"""
Real [MC-SQLR] clients asking several addresses for several instances, run
on a client host of L{tests.netns} (C{ip netns exec HOST python -m
tests.hostclients ...}); prints, as JSON, the port each client was told for
each (address, instance), and what a PRELOGIN naming that instance reaches
there: C{right} (its server), C{other} (another instance's) or an error.

    python -m tests.hostclients DIRECTORY ADDRESS,... INSTANCE,...
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

from impacket.tds import MSSQL
from pytds.instance_browser_client import resolve_instance_port

from srp.wire.tds import INSTOPT, TABULAR_RESULT, decodePrelogin, packetLength, preloginRequest
from tests.test_real_clients import Tsql

#: Seconds pytds and impacket wait for an answer (FreeTDS's own: 16 tries of 1 s).
TIMEOUT = 0.5


def reached(address: str, port: int, instance: str) -> str:
    """What a PRELOGIN naming C{instance} reaches at C{address}:C{port}."""
    try:
        with socket.create_connection((address, port), timeout=2.0) as connection:
            connection.sendall(preloginRequest(instance))
            answer = b""
            while len(answer) < 8 or len(answer) < packetLength(answer):
                chunk = connection.recv(4096)
                if not chunk:
                    return "closed"
                answer += chunk
    except OSError as e:
        return f"error: {e}"
    valid = decodePrelogin(answer, TABULAR_RESULT).get(INSTOPT) == b"\x00"
    return "right" if valid else "other"


def pytdsPort(address: str, instance: str) -> int | None:
    try:
        return int(resolve_instance_port(address, None, instance, TIMEOUT))
    except Exception:  # silence and "not found" alike: no answer
        return None


def impacketPorts(address: str) -> dict[str, int]:
    listing = MSSQL(address).getInstances(TIMEOUT)
    return {entry["InstanceName"].upper(): int(entry["tcp"])
            for entry in listing if "tcp" in entry}


def main(directory: Path, addresses: list[str], instances: list[str]) -> list[dict[str, Any]]:
    tsql = {(a, i): Tsql(directory, f"{a}-{i}", "-S", f"{a}\\{i}", "-U", "x", "-P", "y")
            for a in addresses for i in instances}
    told: dict[tuple[str, str, str], int | None] = {}
    for address in addresses:
        listing = impacketPorts(address)
        for instance in instances:
            told["pytds", address, instance] = pytdsPort(address, instance)
            told["impacket", address, instance] = listing.get(instance.upper())
    for (address, instance), run in tsql.items():
        # FreeTDS logs port 0 for an instance nobody answered for.
        told["tsql", address, instance] = next((p for p in run.result().instancePorts if p),
                                               None)
    return [{"client": client, "address": address, "instance": instance, "port": port,
             "reached": None if port is None else reached(address, port, instance)}
            for (client, address, instance), port in told.items()]


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3].split(","))
    print(json.dumps(result))
