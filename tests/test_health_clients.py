"""
A primary instance's server dies while its srp node lives: plain [MC-SQLR]
clients that nobody here wrote (pytds, impacket, sqlserverport, FreeTDS
tsql) are sent to the standby's port; when the primary's server comes back,
to the primary's again.

Two nodes of one cluster share an address (the one-host model): one
registers SALES at priority 0 (the primary), the other at priority 1; the
test runs with the primary's node active and with the standby's.  Each instance's
"server" is a process of its own that listens on its port; the test kills
the primary's with SIGKILL, as a crash would, and starts it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlserverport
from impacket.tds import MSSQL
from pytds.instance_browser_client import resolve_instance_port

from srp.testing.processes import (
    TaggedEchoProcess,
    primaryAndStandby,
)
from tests.conftest import srp
from tests.test_real_clients import Tsql

CLIENT_TIMEOUT = 2.0
#: Down after 3 failed checks 0.25 s apart, up after 2 good ones; pushed at once.
DETECTION = 1.5


class InstanceServer(TaggedEchoProcess):
    """
    A process listening on HOST:PORT, standing in for a SQL Server instance:
    it accepts connections and closes them (a driver then fails at once).
    """

    SCRIPT = ("import socket, sys, time\n"
              "s = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
              "print('listening', flush=True)\n"
              "deadline = time.monotonic() + 600\n"
              "while time.monotonic() < deadline:\n"
              "    s.accept()[0].close()\n")

    def __init__(self, host: str, port: int, tag: str = "") -> None:
        super().__init__(host, port, tag)


def waitUntil(predicate: Callable[[], bool], timeout: float) -> float:
    """Poll C{predicate} until it holds; return how long it took (fails after C{timeout})."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(params=["primary's node active", "standby's node active"])
def pair(request: pytest.FixtureRequest,
         tmp_path: Path) -> Iterator[tuple[str, list[TaggedEchoProcess]]]:
    with primaryAndStandby(tmp_path, "health", request.param.startswith("primary"),
                           InstanceServer) as (address, servers):
        yield address, servers


def answers(address: str) -> dict[str, int]:
    """The port each real client is told for SALES at C{address}."""
    return {
        "pytds": int(resolve_instance_port(address, None, "SALES", CLIENT_TIMEOUT)),
        "sqlserverport": int(sqlserverport.lookup(address, "SALES")),
        "impacket": next(int(entry["tcp"]) for entry in MSSQL(address).getInstances(
            CLIENT_TIMEOUT) if entry["InstanceName"] == "SALES"),
    }


def test_plain_clients_follow_the_live_registration(
        pair: tuple[str, list[TaggedEchoProcess]], tmp_path: Path) -> None:
    address, (primary, standby) = pair
    everyone = {"pytds", "sqlserverport", "impacket"}
    assert answers(address) == dict.fromkeys(everyone, primary.port)

    primary.kill()
    waitUntil(lambda: answers(address)["pytds"] == standby.port, DETECTION)
    assert answers(address) == dict.fromkeys(everyone, standby.port)
    tsql = Tsql.connect(tmp_path, address, "SALES").result()
    assert tsql.instancePorts == [standby.port]
    status = json.loads(srp("status", "--cluster", "health", "--json", address).stdout)
    health = {r["tcp"]: r["down"] for r in status["registrations"]}
    assert health == {primary.port: True, standby.port: False}

    primary.start()
    waitUntil(lambda: answers(address)["pytds"] == primary.port, DETECTION)
    assert answers(address) == dict.fromkeys(everyone, primary.port)
    tsql = Tsql.connect(tmp_path, address, "SALES").result()
    assert tsql.instancePorts == [primary.port]
