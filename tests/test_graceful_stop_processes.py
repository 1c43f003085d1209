"""
A node stopped gracefully (SIGTERM) refuses new connections to the
instances it serves as soon as it stops serving them: a driver that asks
then goes to the next place at once, instead of hanging on a listener
that nobody serves any more until the process has exited.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from srp.testing.processes import NodeProcess, freeLoopbackAddress

ECHO_NODE = Path(__file__).parent.parent / "examples" / "echo_node.py"


def test_once_its_connections_close_every_connect_is_refused(tmp_path: Path) -> None:
    address = freeLoopbackAddress()
    node = NodeProcess(tmp_path / "none.toml", tmp_path / "node.log", argv=[
        sys.executable, str(ECHO_NODE), "--listen", address, "--transports", "tcp"]).start()
    try:
        [port] = map(int, re.findall(r"HelloFactory starting on (\d+)", node.log()))
        served = socket.create_connection((address, port), timeout=5)
        served.sendall(b"1\r\n")
        assert served.recv(100) == b"A 1\r\n"
        os.kill(node.pid, signal.SIGTERM)
        # The node closes the connections it serves as its last act...
        assert served.recv(100) == b""
        # ...by then nothing listens: a connect is refused, not left to hang.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=5).close()
    finally:
        node.stop()
