"""
Real SQL Server resolution clients, which nobody here wrote, against a real
C{srp serve} process.

One node runs on a free 127.0.0.N address for the whole module, with two
visible instances listening on TCP (one with a named pipe too), one visible
instance with a named pipe only, and one hidden instance.  Each client must
find the TCP ports of the visible instances and no port for the hidden
instance nor for a name the node does not know.

The clients and what they send ([MC-SQLR] message types):

  - python-tds (C{pytds}): CLNT_UCAST_EX (C{03}), then looks the name up in
    the listing;
  - impacket (C{impacket.tds.MSSQL.getInstances}): CLNT_UCAST_EX (C{03});
  - sqlserverport: CLNT_UCAST_INST (C{04} and the name, no NUL);
  - FreeTDS's C{tsql -S HOST\\INSTANCE}: CLNT_UCAST_INST (C{04}, the name, NUL);
    C{tsql -L -H HOST}: CLNT_UCAST_EX (C{03}).

Clients give up on silence slowly: sqlserverport waits 5 s (hard-coded) and
FreeTDS 16 tries of 1 s.  Those lookups start in the background as soon as the
node is up (L{slowLookups}), so the module runs in the time of the slowest one.

See C{docs/compatibility.md}.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytds
import pytest
import sqlserverport
from impacket.tds import MSSQL
from pytds.instance_browser_client import resolve_instance_port, tds7_get_instances

from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig

SERVER = "SRPTEST"
SALES_PIPE = rf"\\{SERVER}\pipe\MSSQL$SALES\sql\query"
PIPES_PIPE = rf"\\{SERVER}\pipe\MSSQL$PIPES\sql\query"

#: Visible, TCP and named pipe.
SALES, SALES_PORT = "SALES", 50101
#: Visible, TCP only, an older version.
REPORTS, REPORTS_PORT = "REPORTS", 50102
REPORTS_VERSION = "15.0.2000.5"
#: Visible, named pipe only: a client asking for its TCP port gets none.
PIPES = "PIPES"
#: Hidden (SQL Server's HideInstance): never listed nor answered.
HIDDEN, HIDDEN_PORT = "AUDIT", 50103
#: A name the node does not know.
UNKNOWN = "NOSUCH"

INSTANCES: list[dict[str, Any]] = [
    {"name": SALES, "tcp": SALES_PORT, "np": SALES_PIPE},
    {"name": REPORTS, "tcp": REPORTS_PORT, "version": REPORTS_VERSION},
    {"name": PIPES, "np": PIPES_PIPE},
    {"name": HIDDEN, "tcp": HIDDEN_PORT, "hidden": True},
]
VISIBLE = {SALES, REPORTS, PIPES}

#: Client timeouts, in seconds, where the client lets us choose one.
CLIENT_TIMEOUT = 1
#: Bound on one tsql run: it gives up on an unanswered name after 16 s.
TSQL_TIMEOUT = 30.0
#: Bound on one sqlserverport lookup: it gives up after 5 s.
LOOKUP_TIMEOUT = 15.0

#: What C{srp serve} logs when a datagram is not a valid request.
MALFORMED = "Ignored a malformed datagram"

#: The line FreeTDS writes to its TDSDUMP log once it has resolved (or failed
#: to resolve, C{0}) an instance, as in C{net.c:1357:instance port is 50101}.
INSTANCE_PORT = re.compile(r"^(?:\S+:\d+:)?instance port is (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Node:
    """The running node and the address it answers on."""

    host: str
    process: NodeProcess

    def assertAllWellFormed(self) -> None:
        """Every request a client sent so far decoded as a valid [MC-SQLR] request."""
        assert MALFORMED not in self.process.log()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    directory = tmp_path_factory.mktemp("node")
    host = freeLoopbackAddress()
    config = writeNodeConfig(directory / "node.toml", [host], INSTANCES, serverName=SERVER)
    process = NodeProcess(config, directory / "node.log").start()
    try:
        yield Node(host, process)
    finally:
        process.stop()


def assertVisibleListing(instances: dict[str, dict[str, str]]) -> None:
    """A client's listing holds exactly the visible instances, each with its fields."""
    assert set(instances) == VISIBLE
    assert instances[SALES] == {
        "ServerName": SERVER, "InstanceName": SALES, "IsClustered": "No",
        "Version": "16.0.1000.6", "tcp": str(SALES_PORT), "np": SALES_PIPE,
    }
    assert instances[REPORTS]["tcp"] == str(REPORTS_PORT)
    assert instances[REPORTS]["Version"] == REPORTS_VERSION
    assert "tcp" not in instances[PIPES]


def tsqlPath() -> str:
    """Where FreeTDS's tsql is; fails (not skips) the test if it is missing."""
    path = shutil.which("tsql")
    assert path is not None, "FreeTDS tsql is not installed (apt-get install freetds-bin)"
    return path


@dataclass(frozen=True)
class TsqlResult:
    returncode: int
    output: str
    dump: str

    @property
    def instancePorts(self) -> list[int]:
        """Every port FreeTDS says it resolved, in its TDSDUMP log."""
        return [int(port) for port in INSTANCE_PORT.findall(self.dump)]


class Tsql:
    """
    One run of FreeTDS's tsql, started now, with its TDSDUMP log in C{directory}.

    stdin is /dev/null so that it never waits for input; C{freetds.conf} is an
    empty file of ours so that no local configuration changes what it does.
    """

    def __init__(self, directory: Path, name: str, *arguments: str) -> None:
        self.dump = directory / f"{name}.tdsdump"
        conf = directory / "freetds.conf"
        conf.write_text("[global]\n")
        env = {**os.environ, "TDSDUMP": str(self.dump), "TDSVER": "7.4",
               "FREETDSCONF": str(conf)}
        self.process = subprocess.Popen(
            [tsqlPath(), *arguments], env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    @classmethod
    def connect(cls, directory: Path, host: str, instance: str) -> Tsql:
        """C{tsql -S 'HOST\\INSTANCE' -U x -P y}: resolve the instance, then log in."""
        return cls(directory, instance, "-S", f"{host}\\{instance}", "-U", "x", "-P", "y")

    def result(self, timeout: float = TSQL_TIMEOUT) -> TsqlResult:
        output, _ = self.process.communicate(timeout=timeout)
        dump = self.dump.read_text(errors="replace") if self.dump.exists() else ""
        return TsqlResult(self.process.returncode, output, dump)

    def stop(self) -> None:
        """Kill it if it is still running (a test failed before reading its result)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@dataclass(frozen=True)
class SlowLookups:
    """Lookups that take their client seconds to give up on, started early, read by the tests."""

    tsql: dict[str, Tsql]
    sqlserverport: dict[str, Future[int]]


@pytest.fixture(scope="module", autouse=True)
def slowLookups(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowLookups]:
    directory = tmp_path_factory.mktemp("slow-tsql")
    runs: dict[str, Tsql] = {}
    if shutil.which("tsql"):  # else the tsql tests fail in tsqlPath()
        runs = {name: Tsql.connect(directory, node.host, name)
                for name in (HIDDEN, UNKNOWN, PIPES)}
    pool = ThreadPoolExecutor(max_workers=2)
    lookups = {name: pool.submit(sqlserverport.lookup, node.host, name)
               for name in (HIDDEN, UNKNOWN)}
    try:
        yield SlowLookups(runs, lookups)
    finally:
        for run in runs.values():
            run.stop()
        pool.shutdown(wait=True)


# python-tds


def test_pytds_lists_visible_instances(node: Node) -> None:
    """
    pytds sends CLNT_UCAST_EX and keys the listing by upper-cased instance
    name; it holds the visible instances, with every field, and nothing else.
    """
    instances = tds7_get_instances(node.host, CLIENT_TIMEOUT)
    assert instances is not None
    assertVisibleListing(instances)
    assert instances[PIPES]["np"] == PIPES_PIPE
    node.assertAllWellFormed()


def test_pytds_resolves_ports(node: Node) -> None:
    assert resolve_instance_port(node.host, None, SALES, CLIENT_TIMEOUT) == SALES_PORT
    assert resolve_instance_port(node.host, None, REPORTS, CLIENT_TIMEOUT) == REPORTS_PORT
    node.assertAllWellFormed()


@pytest.mark.parametrize("instance", [HIDDEN, UNKNOWN])
def test_pytds_hidden_and_unknown_not_found(node: Node, instance: str) -> None:
    """Absent from the listing: L{resolve_instance_port} and C{connect} raise LoginError."""
    expected = f"Instance {instance} not found on server {node.host}"
    with pytest.raises(pytds.LoginError) as resolving:
        resolve_instance_port(node.host, None, instance, CLIENT_TIMEOUT)
    assert resolving.value.args[0] == expected
    with pytest.raises(pytds.LoginError) as connecting:
        pytds.connect(dsn=f"{node.host}\\{instance.lower()}", user="x", password="y",
                      login_timeout=CLIENT_TIMEOUT, timeout=CLIENT_TIMEOUT)
    assert connecting.value.args[0] == expected
    node.assertAllWellFormed()


def test_pytds_instance_without_tcp(node: Node) -> None:
    with pytest.raises(pytds.LoginError) as error:
        resolve_instance_port(node.host, None, PIPES, CLIENT_TIMEOUT)
    assert error.value.args[0] == f"Instance {PIPES} doen't have tcp connections enabled"


def test_pytds_connect_reaches_resolved_port(node: Node) -> None:
    """
    C{pytds.connect(dsn='HOST\\sales')} resolves through the node and opens
    its TDS connection to the resolved port: a listener there receives a
    PRELOGIN packet (type C{0x12}).  Nothing answers it, so connect times out.
    """
    with socket.socket() as listener:
        listener.bind((node.host, SALES_PORT))
        listener.listen(8)
        with pytest.raises(OSError):
            pytds.connect(dsn=f"{node.host}\\{SALES.lower()}", user="x", password="y",
                          login_timeout=CLIENT_TIMEOUT, timeout=CLIENT_TIMEOUT)
        listener.settimeout(CLIENT_TIMEOUT)
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(CLIENT_TIMEOUT)
            assert connection.recv(1) == b"\x12"
    node.assertAllWellFormed()


# impacket


def test_impacket_lists_visible_instances(node: Node) -> None:
    """impacket sends CLNT_UCAST_EX and returns one dict per listed instance."""
    listing = MSSQL(node.host).getInstances(CLIENT_TIMEOUT)
    assert len(listing) == len(VISIBLE)
    instances = {entry["InstanceName"]: entry for entry in listing}
    assert set(instances) == VISIBLE
    assert int(instances[SALES]["tcp"]) == SALES_PORT
    assert instances[SALES]["np"] == SALES_PIPE
    assert int(instances[REPORTS]["tcp"]) == REPORTS_PORT
    assert instances[REPORTS]["Version"] == REPORTS_VERSION
    assert "tcp" not in instances[PIPES]
    assert instances[SALES]["ServerName"] == SERVER
    assert HIDDEN not in instances
    assert UNKNOWN not in instances
    node.assertAllWellFormed()


# sqlserverport


def test_sqlserverport_resolves_ports(node: Node) -> None:
    """CLNT_UCAST_INST, matched case-insensitively by the node."""
    assert sqlserverport.lookup(node.host, SALES) == SALES_PORT
    assert sqlserverport.lookup(node.host, REPORTS) == REPORTS_PORT
    assert sqlserverport.lookup(node.host, REPORTS.lower()) == REPORTS_PORT
    node.assertAllWellFormed()


@pytest.mark.parametrize("instance", [HIDDEN, UNKNOWN])
def test_sqlserverport_hidden_and_unknown_get_no_response(
    node: Node, slowLookups: SlowLookups, instance: str
) -> None:
    """The node stays silent; after its 5 s timeout sqlserverport raises BrowserError."""
    error = slowLookups.sqlserverport[instance].exception(timeout=LOOKUP_TIMEOUT)
    assert isinstance(error, sqlserverport.BrowserError)
    assert error.message == (
        f"No response from the SQL Browser service. Verify that the service is "
        f"available on {node.host} and \\{instance} is a valid instance name on it."
    )
    node.assertAllWellFormed()


def test_sqlserverport_instance_without_tcp(node: Node) -> None:
    with pytest.raises(sqlserverport.NoTcpError) as error:
        sqlserverport.lookup(node.host, PIPES)
    assert error.value.message == (
        f"Instance \\{PIPES} is not configured to accept TCP/IP connections."
    )


# FreeTDS


def test_tsql_installed() -> None:
    tsqlPath()


@pytest.mark.parametrize(("instance", "port"), [(SALES, SALES_PORT),
                                                (REPORTS.lower(), REPORTS_PORT)])
def test_tsql_resolves_ports(node: Node, tmp_path: Path, instance: str, port: int) -> None:
    """
    tsql sends CLNT_UCAST_INST, logs C{instance port is N} and connects to N,
    where nothing listens.
    """
    result = Tsql.connect(tmp_path, node.host, instance).result()
    assert f"tds7_get_instance_port({node.host}, {instance})" in result.dump
    assert result.instancePorts == [port]
    assert f"Connecting to {node.host} port {port}\n" in result.dump
    assert "Connection refused" in result.output
    assert result.returncode == 1
    node.assertAllWellFormed()


@pytest.mark.parametrize("instance", [HIDDEN, UNKNOWN])
def test_tsql_hidden_and_unknown_get_no_port(
    node: Node, slowLookups: SlowLookups, instance: str
) -> None:
    """
    No reply ever comes (no C{instance info} in the dump); after 16 tries
    FreeTDS logs C{instance port is 0} and gives up without connecting.
    """
    result = slowLookups.tsql[instance].result()
    assert f"tds7_get_instance_port({node.host}, {instance})" in result.dump
    assert "instance info" not in result.dump
    assert result.instancePorts == [0]
    assert "invalid port number" in result.dump
    assert f"Connecting to {node.host}" not in result.dump
    assert "Unable to connect: Adaptive Server is unavailable or does not exist" in result.output
    assert result.returncode == 1
    node.assertAllWellFormed()


def test_tsql_instance_without_tcp(node: Node, slowLookups: SlowLookups) -> None:
    """
    The node answers (C{instance info} in the dump) with no tcp entry: FreeTDS
    asks again on each of its 16 tries, then gives port 0.
    """
    result = slowLookups.tsql[PIPES].result()
    assert result.dump.count("instance info") > 1
    assert result.instancePorts == [0]
    assert f"Connecting to {node.host}" not in result.dump
    assert result.returncode == 1


def parseTsqlListing(output: str) -> dict[str, dict[str, str]]:
    """
    The instances C{tsql -L} prints: blocks of C{%15s %s} lines (name,
    value), separated by blank lines, keyed by InstanceName.  Its own
    complaints (C{error: expecting 'tcp', found 'np'}) are left out.
    """
    instances: dict[str, dict[str, str]] = {}
    for block in output.strip().split("\n\n"):
        fields = dict(line.strip().split(" ", 1) for line in block.splitlines()
                      if line.strip() and not line.startswith("error:"))
        instances[fields["InstanceName"]] = fields
    return instances


def test_tsql_lists_visible_instances(node: Node) -> None:
    """
    C{tsql -L -H HOST} sends CLNT_UCAST_EX and prints each visible instance,
    on standard error.
    """
    completed = subprocess.run(
        [tsqlPath(), "-L", "-H", node.host], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=TSQL_TIMEOUT, check=False,
    )
    assert completed.returncode == 0
    assert completed.stdout == ""
    instances = parseTsqlListing(completed.stderr)
    assertVisibleListing(instances)
    assert HIDDEN not in completed.stderr
    assert str(HIDDEN_PORT) not in completed.stderr
    node.assertAllWellFormed()
