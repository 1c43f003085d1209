"""
Public test helpers for code that uses srp, in the spirit of C{treq.testing}.

L{FakeDatagramTransport} records what a L{DatagramProtocol} sends, so that
responders can be tested without sockets; L{exchange} runs one request
through a protocol and returns its replies.  L{NodeProcess} runs a real
C{srp serve} on a free loopback address (L{freeLoopbackAddress}).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from srp.server.config import loadConfig


class FakeDatagramTransport:
    """
    A datagram transport that keeps what is written instead of sending it.

    C{refuse} may be set to an L{OSError} to make the next writes fail, as a
    full socket buffer would.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1434) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.refuse: OSError | None = None
        self._address = (host, port)

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """Record C{datagram} as sent to C{addr}, or raise C{refuse}."""
        if self.refuse is not None:
            raise self.refuse
        self.written.append((datagram, addr))

    def getHost(self) -> tuple[str, int]:
        """The address this transport pretends to be bound to."""
        return self._address

    def stopListening(self) -> None:
        """Nothing to release."""


def connectDatagram(protocol: DatagramProtocol, host: str = "127.0.0.1",
                    port: int = 1434) -> FakeDatagramTransport:
    """Attach a new L{FakeDatagramTransport} to C{protocol} and start it."""
    transport = FakeDatagramTransport(host, port)
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return transport


def exchange(protocol: DatagramProtocol, datagram: bytes,
             source: tuple[str, int] = ("192.0.2.1", 50000)) -> list[bytes]:
    """
    Deliver C{datagram} from C{source} to C{protocol} and return what it sent back.

    The protocol must already be connected with L{connectDatagram}.
    """
    transport = protocol.transport
    assert isinstance(transport, FakeDatagramTransport), "connect it with connectDatagram"
    before = len(transport.written)
    protocol.datagramReceived(datagram, source)
    return [data for data, addr in transport.written[before:] if addr == source]


def freeLoopbackAddress(port: int = 1434, first: int = 2, last: int = 254) -> str:
    """
    A 127.0.0.N address whose UDP C{port} nobody holds right now.

    Several nodes (and test runs) can each own port 1434 this way.
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


class NodeProcess:
    """
    A real C{srp serve} process, for tests, demos and benchmarks.

    Its log goes to C{logPath}; L{start} waits until it answers, L{stop}
    ends it by its PID (SIGTERM, then SIGKILL).  A C{prefix} that execs
    (C{ip netns exec NAME}) keeps the PID the node's own.
    """

    READY = "answering on"

    def __init__(self, config: Path, logPath: Path, executable: str | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.config = config
        self.logPath = logPath
        self.executable = executable or str(Path(sys.executable).with_name("srp"))
        #: Run the node through this command, e.g. C{ip netns exec HOST}.
        self.prefix = tuple(prefix)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> NodeProcess:
        """Start the node and wait for its ready line; raise if it exits or times out."""
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [*self.prefix, self.executable, "serve", "--config", str(self.config)],
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
        return self.logPath.read_text(errors="replace")

    @property
    def pid(self) -> int:
        """The process id of the running node."""
        assert self.process is not None, "not started"
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        """End the node (SIGTERM, then SIGKILL after C{timeout}); return its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def writeNodeConfig(path: Path, listen: list[str], instances: list[dict[str, Any]],
                    port: int = 1434, serverName: str = "SRPTEST") -> Path:
    """Write a node configuration file (TOML) for L{NodeProcess}; return its path."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "'" + str(v) + "'"

    lines = ["[node]", f"listen = {value(listen)}", f"port = {port}",
             f"server_name = {value(serverName)}"]
    for instance in instances:
        lines += ["", "[[instances]]", *(f"{k} = {value(v)}" for k, v in instance.items())]
    path.write_text("\n".join(lines) + "\n")
    return path
