"""
Drivers of real C{srp serve} processes, for tests, demos and benchmarks.

L{NodeProcess} runs a node on a free loopback address
(L{freeLoopbackAddress}; L{freeTCPPort} for its metrics) from a
configuration that L{writeNodeConfig} writes (and a key file
L{writeKeyFile} writes); L{ProxyProcess} runs C{srp proxy};
L{TaggedEchoProcess} stands in for an instance's server, in a process of
its own that a test can kill; L{stopProcess} ends any child by its PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from srp.server.config import loadConfig
from srp.wire.mcsqlr import BROWSER_PORT


def freeLoopbackAddress(port: int = BROWSER_PORT, first: int = 2, last: int = 254) -> str:
    """
    A 127.0.0.N address whose UDP C{port} nobody holds right now.

    Several nodes (and test runs) can each own the browser port this way.
    """
    for n in range(first, last + 1):
        address = f"127.0.0.{n}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return address
    raise RuntimeError(f"every address 127.0.0.{first}-{last} has UDP port {port} in use")


def freeTCPPort(host: str) -> int:
    """A TCP port of C{host} that nobody listens on right now (for a node's metrics)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def stopProcess(process: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """End C{process} by its PID: SIGTERM, then SIGKILL after C{timeout}; its exit code."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


class NodeProcess:
    """
    A real C{srp serve} process, for tests, demos and benchmarks.

    Its log goes to C{logPath}; L{start} waits until it answers, L{stop}
    ends it by its PID (SIGTERM, then SIGKILL).  A C{prefix} that execs
    (C{ip netns exec NAME}) keeps the PID the node's own.
    """

    READY = " started ("

    def __init__(self, config: Path, logPath: Path, executable: str | None = None,
                 prefix: Sequence[str] = (), argv: Sequence[str] | None = None,
                 output: Path | None = None) -> None:
        self.config = config
        self.logPath = logPath
        #: Where the process's stdout and stderr go: C{logPath}, unless the
        #: node writes its log elsewhere (C{--logfile}).
        self.output = output or logPath
        self.executable = executable or str(Path(sys.executable).with_name("srp"))
        #: Run the node through this command, e.g. C{ip netns exec HOST}.
        self.prefix = tuple(prefix)
        #: The whole command line, for a program embedding a node (default:
        #: C{srp serve --config CONFIG}).
        self.argv = tuple(argv) if argv is not None else (
            self.executable, "serve", "--config", str(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Self:
        """Start the node and wait for its ready line; raise if it exits or times out."""
        with open(self.output, "wb") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *self.argv],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.READY in self.log():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"srp serve exited with {self.process.returncode}: "
                                   f"{self.log().strip()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"srp serve did not get ready within {timeout} s: {self.log()}")

    @property
    def address(self) -> str:
        """The first address the node listens on."""
        return loadConfig(self.config).listen[0]

    def log(self) -> str:
        """Everything the node has logged so far."""
        try:
            return self.logPath.read_text(errors="replace")
        except FileNotFoundError:  # a --logfile the node has not opened yet
            return ""

    @property
    def pid(self) -> int:
        """The process id of the running node."""
        assert self.process is not None, "not started"
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        """End the node (SIGTERM, then SIGKILL after C{timeout}); return its exit code."""
        if self.process is None:
            return 0
        return stopProcess(self.process, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def writeKeyFile(path: Path) -> Path:
    """Write a fresh random cluster key to C{path} (mode 600, as a node requires)."""
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return path


class ProxyProcess(NodeProcess):
    """A real C{srp proxy} process: one listener, C{listen}, for C{target}."""

    READY = ": listening on "

    def __init__(self, listen: str, target: str, logPath: Path, *options: str,
                 executable: str | None = None) -> None:
        executable = executable or str(Path(sys.executable).with_name("srp"))
        super().__init__(Path(os.devnull), logPath, executable,
                         argv=(executable, "proxy", "--listen", listen, target, *options))
        self.listen = listen

    @property
    def address(self) -> str:
        """The address the proxy listens on."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return int(self.listen.rpartition(":")[2])


_ECHO = """\
import socket, sys, threading
tag = sys.argv[3].encode() + b":"
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
def serve(connection):
    with connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        while data := connection.recv(65536):
            *lines, pending = (pending + data).split(b"\\n")
            connection.sendall(b"".join(tag + line + b"\\n" for line in lines))
print("listening", flush=True)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


class TaggedEchoProcess:
    """
    A process listening on C{host}:C{port}, standing in for an instance's
    server: it answers each line C{L} it reads with C{TAG:L}, so that a client
    knows which server answered.  Kill it with L{kill}, as a crash would.
    """

    #: The program it runs, with the arguments host, port and tag.
    SCRIPT = _ECHO

    def __init__(self, host: str, port: int, tag: str) -> None:
        self.host, self.port, self.tag = host, port, tag
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start it and wait until it listens."""
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, self.host, str(self.port), self.tag],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.process.stdout is not None
        if self.process.stdout.readline() != b"listening\n":
            raise RuntimeError(f"the echo server for {self.host}:{self.port} did not start")
        return self

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """End it if it runs."""
        if self.process is not None:
            stopProcess(self.process)


def _waitForLog(node: NodeProcess, line: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in node.log():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{line!r} not logged within {timeout} s: {node.log()}")
        time.sleep(0.02)


@contextmanager
def primaryAndStandby(directory: Path, cluster: str, activeFirst: bool = True,
                      server: type[TaggedEchoProcess] = TaggedEchoProcess,
                      ) -> Iterator[tuple[str, list[TaggedEchoProcess]]]:
    """
    Two nodes of C{cluster} on one free loopback address; each registers
    C{SALES} with the port of a C{server} process of its own, tagged
    C{primary} (priority 0) and C{standby} (priority 1).  The primary's node
    starts first and is the active, or the standby's if not C{activeFirst}.
    Yields the address and the two servers, primary first; ends them all by
    their PIDs.
    """
    address = freeLoopbackAddress()
    servers = [server(address, freeTCPPort(address), tag).start()
               for tag in ("primary", "standby")]
    nodes: list[NodeProcess] = []
    try:
        for index in (0, 1) if activeFirst else (1, 0):
            config = writeNodeConfig(
                directory / f"node{index}.toml", [address],
                [{"name": "SALES", "tcp": servers[index].port, "priority": index}],
                serverName=f"H{index}", tables={"cluster": {"name": cluster}})
            nodes.append(NodeProcess(config, directory / f"node{index}.log").start())
            _waitForLog(nodes[0], "Active for cluster")
        _waitForLog(nodes[1], "Passive in cluster")
        yield address, servers
    finally:
        for node in nodes:
            node.stop()
        for running in servers:
            running.stop()


def writeClusterConfigs(directory: Path, address: str, cluster: dict[str, Any],
                        count: int = 2) -> list[Path]:
    """
    Configuration files of C{count} nodes of the cluster C{cluster} (its
    C{[cluster]} table) on one C{address}: node I registers instance C{NI}
    at tcp port 60000 + I, unchecked.  Start them in order for the first to
    be the active.
    """
    return [writeNodeConfig(directory / f"node{index}.toml", [address],
                            [{"name": f"N{index}", "tcp": 60000 + index, "check": "none"}],
                            tables={"cluster": cluster})
            for index in range(count)]


def writeNodeConfig(path: Path, listen: list[str], instances: list[dict[str, Any]],
                    port: int = BROWSER_PORT, serverName: str = "SRPTEST",
                    tables: dict[str, dict[str, Any]] | None = None,
                    node: dict[str, Any] | None = None) -> Path:
    """
    Write a node configuration file (TOML) for L{NodeProcess}; return its path.

    @param tables: more tables, such as C{{"cluster": {"name": "c"}}} or
        C{{"limits": {"reply_rate_per_source": 0}}}.
    @param node: more keys of the C{[node]} table, such as C{{"extensions": False}}.
    """
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "'" + str(v) + "'"

    lines = ["[node]", f"listen = {value(listen)}", f"port = {port}",
             f"server_name = {value(serverName)}",
             *(f"{k} = {value(v)}" for k, v in (node or {}).items())]
    for name, table in (tables or {}).items():
        lines += ["", f"[{name}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    for instance in instances:
        lines += ["", "[[instances]]", *(f"{k} = {value(v)}" for k, v in instance.items())]
    path.write_text("\n".join(lines) + "\n")
    return path
