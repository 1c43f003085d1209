"""
C{srp proxy}, a real process, in front of instances registered by real
C{srp serve} nodes.

Real drivers (pytds, FreeTDS tsql) connect to the proxy's address as to a
SQL Server and speak first (PRELOGIN): the backend, which answers PRELOGIN
as SQL Server does, records a LOGIN7 after it, so the answer went back
through the proxy and the driver carried on.  A plain socket client across
a kill -9 of the primary instance's server: its open connection is closed,
everything it sent before was answered by the primary, and its next new
connection reaches the standby at once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytds
import pytest

from srp.testing.processes import (
    NodeProcess,
    ProxyProcess,
    TaggedEchoProcess,
    freeLoopbackAddress,
    freeTCPPort,
    primaryAndStandby,
    writeNodeConfig,
)
from srp.wire.tds import PRELOGIN
from tests.conftest import srp
from tests.test_health_clients import waitUntil
from tests.test_real_clients import tsqlPath
from tests.test_relay_clients import LOGIN7, TIMEOUT, PreloginBackend


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[ProxyProcess, PreloginBackend, NodeProcess]]:
    """A PRELOGIN-answering SALES registered by a node, and `srp proxy` in front of it."""
    address = freeLoopbackAddress()
    backend = PreloginBackend(address)
    config = writeNodeConfig(tmp_path / "node.toml", [address],
                             [{"name": "SALES", "tcp": backend.port}])
    try:
        with NodeProcess(config, tmp_path / "node.log") as node, ProxyProcess(
                f"127.0.0.1:{freeTCPPort('127.0.0.1')}", f"{address}/SALES",
                tmp_path / "proxy.log", "--prefer", "tcp") as proxy:
            yield proxy, backend, node
    finally:
        backend.close()


def test_pytds_through_the_proxy(
        proxied: tuple[ProxyProcess, PreloginBackend, NodeProcess]) -> None:
    proxy, backend, node = proxied
    with pytest.raises((pytds.Error, OSError)):
        pytds.connect(dsn=proxy.address, port=proxy.port, user="x", password="y",
                      login_timeout=TIMEOUT, timeout=TIMEOUT)
    # The node's health checks connect too, and send nothing.
    assert [p for p in backend.packets if p] == [[PRELOGIN, LOGIN7]], proxy.log()
    assert "Traceback" not in proxy.log() + node.log()


def test_tsql_through_the_proxy(proxied: tuple[ProxyProcess, PreloginBackend, NodeProcess],
                                tmp_path: Path) -> None:
    proxy, backend, node = proxied
    conf = tmp_path / "freetds.conf"
    conf.write_text("[global]\n")
    subprocess.run([tsqlPath(), "-H", proxy.address, "-p", str(proxy.port), "-U", "x",
                    "-P", "y"], env={**os.environ, "TDSVER": "7.4", "FREETDSCONF": str(conf)},
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert [p for p in backend.packets if p][:1] == [[PRELOGIN, LOGIN7]], proxy.log()
    assert "Traceback" not in proxy.log() + node.log()


class LineClient:
    """A plain socket client of the proxy that writes first and reads tagged lines."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.socket = socket.create_connection((proxy.address, proxy.port), timeout=5)
        self.pending = b""

    def ask(self, line: str) -> str:
        """Send C{line}; return the answer, C{TAG:line}."""
        self.socket.sendall(line.encode() + b"\n")
        return self.readLine()

    def readLine(self) -> str:
        while b"\n" not in self.pending:
            data = self.socket.recv(65536)
            if not data:
                return ""  # closed
            self.pending += data
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.socket.close()


def test_plain_client_across_a_kill_9_of_the_primary(tmp_path: Path) -> None:
    with primaryAndStandby(tmp_path, "px") as (address, servers):
        with ProxyProcess(f"127.0.0.1:{freeTCPPort('127.0.0.1')}", f"{address}/SALES",
                          tmp_path / "proxy.log", "--cluster", "px",
                          "--prefer", "tcp") as proxy:
            client = LineClient(proxy)
            # Client-first bytes, then a stream of requests: every one answered.
            assert [client.ask(f"{n}") for n in range(100)] == [
                f"primary:{n}" for n in range(100)]

            servers[0].kill()
            # The open connection is closed cleanly: EOF, no answer from elsewhere.
            assert client.readLine() == ""
            client.close()

            started = time.monotonic()
            after = LineClient(proxy)
            assert after.ask("first") == "standby:first"
            assert time.monotonic() - started < 1.0, "the next connection waited"
            assert [after.ask(f"{n}") for n in range(100)] == [
                f"standby:{n}" for n in range(100)]
            after.close()
        # The counters, logged as the proxy stops.
        assert (": 2 accepted, 2 spliced, 0 failed, 0 refused, 1 dropped, 0 abandoned, 0 open"
                in proxy.log()), proxy.log()
        assert "Traceback" not in proxy.log()


@pytest.mark.parametrize("runner", ["srp serve", "twistd -n srp"])
def test_a_node_runs_proxies_beside_it(runner: str, tmp_path: Path) -> None:
    address = freeLoopbackAddress()
    server = TaggedEchoProcess(address, freeTCPPort(address), "sales").start()
    listen = f"127.0.0.1:{freeTCPPort('127.0.0.1')}"
    config = writeNodeConfig(tmp_path / "node.toml", [address],
                             [{"name": "SALES", "tcp": server.port}])
    argv = None
    if runner == "srp serve":
        with config.open("a") as f:
            f.write(f'\n[[proxies]]\nlisten = "{listen}"\ntarget = "{address}/SALES"\n'
                    'prefer = ["tcp"]\n')
    else:
        argv = [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "srp",
                "--config", str(config), "--proxy", f"{listen}={address}/SALES"]
    try:
        with NodeProcess(config, tmp_path / "node.log", argv=argv) as node:
            waitUntil(lambda: ": listening on " in node.log(), 10)
            client = socket.create_connection(("127.0.0.1", int(listen.rpartition(":")[2])),
                                              timeout=5)
            client.sendall(b"hello\n")
            assert client.recv(100) == b"sales:hello\n"
            client.close()
        assert "Traceback" not in node.log()
    finally:
        server.stop()


def test_bad_input_to_srp_proxy_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for argv, status, message in [
            (["--listen", "db1:1433", "db1/SALES"], 2,
             "listen address 'db1:1433': 'db1' is not an IP address"),
            (["--listen", "127.0.0.1:1433"], 2, "give each --listen ADDRESS:PORT its "
             "CLUSTER/INSTANCE (1 --listen, 0 targets)"),
            (["--listen", "127.0.0.1:1433", "db1/SALES", "--verify", "bogus"], 1,
             "proxy 127.0.0.1:1433 -> db1/SALES: unknown verifier 'bogus'; choose from none, "
             "tds, hello"),
            (["--listen", f"127.0.0.1:{port}", "db1/SALES"], 1,
             f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use."),
        ]:
            result = srp("proxy", *argv)
            assert result.returncode == status, result.stderr
            usage = " (see 'srp --help' or 'srp COMMAND --help')" if status == 2 else ""
            assert result.stderr.splitlines() == [f"srp: {message}{usage}"], result.stderr
