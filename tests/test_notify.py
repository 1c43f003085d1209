"""
systemd's Type=notify, with a datagram socket standing in for systemd:
READY=1 once a real `srp serve` answers and not before, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from srp.notify import notify
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest
from tests.conftest import BIN


@pytest.fixture
def manager() -> Iterator[tuple[str, socket.socket]]:
    """An abstract AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET; its @name."""
    name = f"@srp-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name[1:])
        s.setblocking(False)
        yield name, s


def received(s: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(s.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_notify_sends_one_datagram(manager: tuple[str, socket.socket],
                                   tmp_path: Path) -> None:
    name, s = manager
    assert notify("READY=1", {"NOTIFY_SOCKET": name}) is True
    assert received(s) == ["READY=1"]
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as byPath:
        byPath.bind(str(path))
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": str(path)}) is True
        assert byPath.recv(100) == b"STOPPING=1"


def test_notify_outside_systemd_or_unreachable_is_not_an_error(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


def ask(address: str, timeout: float = 0.02) -> bool:
    """Whether the node at C{address} answers a CLNT_UCAST_INST within C{timeout}."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(InstanceRequest("SALES").encode(), (address, 1434))
        try:
            return s.recv(4096)[:1] == b"\x05"
        except TimeoutError:
            return False


@pytest.mark.parametrize(("clustered", "twistd"), [(True, False), (False, False), (True, True)],
                         ids=["clustered", "standalone", "twistd-clustered"])
def test_ready_once_the_node_answers_and_stopping_on_sigterm(
        manager: tuple[str, socket.socket], tmp_path: Path, clustered: bool, twistd: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name, s = manager
    address = freeLoopbackAddress()
    config = writeNodeConfig(tmp_path / "node.toml", [address],
                             [{"name": "SALES", "tcp": 50101, "check": "none"}],
                             tables={"cluster": {"name": "notify"}} if clustered else {})
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    node = NodeProcess(config, tmp_path / "node.log", argv=[
        str(BIN / "twistd"), "-n", "--pidfile=", "srp", "--config", str(config)]
        if twistd else None)
    with node:
        unanswered = answered = 0
        deadline = time.monotonic() + 10
        messages: list[str] = []
        while not messages:
            assert time.monotonic() < deadline, "no READY=1 within 10 s"
            if ask(address):
                answered += 1
            else:
                unanswered += 1
            messages = received(s)
        assert messages == ["READY=1"]
        # Whatever is asked once READY=1 is here is answered: it was not early.
        assert all(ask(address, 1.0) for _ in range(20))
        if clustered:
            # A clustered node looks for an active for 0.5 s before it answers;
            # READY=1 waited for that.
            assert unanswered >= 5, (unanswered, answered)
        os.kill(node.pid, signal.SIGTERM)
        # twistd ends itself with the signal once it has stopped (its exit
        # status, as a shell sees it); srp serve exits with 0.
        assert node.process is not None
        assert node.process.wait(10) == (-signal.SIGTERM if twistd else 0)
    assert received(s) == ["STOPPING=1"]
    assert "Cannot tell the service manager" not in node.log()
