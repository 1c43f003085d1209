"""
The kernel's table of listening sockets (L{srp.server.listening}) and the
C{tcp} health check that reads it: deterministic tests on fake /proc
files and a L{Clock}, then the real kernel's table on loopback.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from zope.interface import implementer

from srp.interfaces import IHealthCheck
from srp.records import InstanceInfo
from srp.server.checks import TcpCheck, checkNamed
from srp.server.listening import (
    MAX_AGE,
    Found,
    ListeningSockets,
    ListeningTable,
    ProcFiles,
    readListeningTable,
)

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
TAIL = "00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0"


def kernelHex(address: str) -> str:
    """An address as /proc/net/tcp prints it: each 32-bit word a native integer."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    return "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}"
                   for i in range(0, len(packed), 4))


def table(*sockets: tuple[str, int, str]) -> str:
    """The text of /proc/net/tcp(6) listing C{(address, port, state)}."""
    lines = [f"{n:4d}: {kernelHex(address)}:{port:04X} {'0' * len(kernelHex(address))}:0000 "
             f"{state} {TAIL}" for n, (address, port, state) in enumerate(sockets)]
    return HEADER + "\n".join(lines) + "\n"


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 192.0.2.255
              /32 link BROADCAST
"""
IF_INET6 = ("00000000000000000000000000000001 01 80 10 80       lo\n"
            "fd000000000000000000000000000002 04 40 00 82     eth0\n")


@pytest.fixture
def files(tmp_path: Path) -> ProcFiles:
    """Fake kernel tables: listeners on 127.0.0.2:4001, *:4002, ::1:4004,
    [::]:4005 and ::ffff:127.0.0.2:4006; an established socket on 4003."""
    (tmp_path / "tcp").write_text(table(("127.0.0.2", 4001, "0A"), ("0.0.0.0", 4002, "0A"),
                                        ("127.0.0.2", 4003, "01")))
    (tmp_path / "tcp6").write_text(table(("::1", 4004, "0A"), ("::", 4005, "0A"),
                                         ("::ffff:127.0.0.2", 4006, "0A")))
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    return ProcFiles(tcp=tmp_path / "tcp", tcp6=tmp_path / "tcp6",
                     fibTrie=tmp_path / "fib_trie", ifInet6=tmp_path / "if_inet6",
                     netlink=False)


@pytest.mark.parametrize(("host", "port", "found"), [
    ("127.0.0.2", 4001, Found.LISTENING),
    ("127.0.0.5", 4001, Found.NOTHING),  # another address of the host
    ("127.0.0.9", 4002, Found.LISTENING),  # the wildcard takes it
    ("192.0.2.2", 4002, Found.LISTENING),
    ("127.0.0.2", 4003, Found.NOTHING),  # not listening: established
    ("127.0.0.2", 4999, Found.NOTHING),
    ("::1", 4004, Found.LISTENING),
    ("::1", 4001, Found.NOTHING),  # an IPv4 listener takes no IPv6 connection
    ("fd00::2", 4005, Found.LISTENING),
    ("127.0.0.2", 4005, None),  # a [::] listener may be IPV6_V6ONLY or not
    ("127.0.0.2", 4006, Found.LISTENING),  # an IPv4-mapped listener
    ("::ffff:127.0.0.2", 4001, Found.LISTENING),
    ("203.0.113.9", 4001, None),  # not this host's: connect
    ("fd00::9", 4004, None),
    ("db.example", 4001, None),
])
def test_what_a_connect_would_find(files: ProcFiles, host: str, port: int,
                                   found: Found | None) -> None:
    assert readListeningTable(files).find(host, port) is found


def test_a_full_accept_queue_refuses_like_a_connect() -> None:
    key = socket.inet_aton("127.0.0.2") + (4001).to_bytes(2, "big")
    assert ListeningTable(frozenset({key}), frozenset({key})).find("127.0.0.2", 4001) \
        is Found.FULL


@implementer(IHealthCheck)
class RecordingConnect:
    """Stands in for the connect check: records what it was asked."""

    name = "connect"

    def __init__(self) -> None:
        self.asked: list[tuple[str, InstanceInfo]] = []

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None]:
        self.asked.append((host, info))
        return succeed(None)


def tcpCheck(files: ProcFiles) -> tuple[TcpCheck, ListeningSockets, RecordingConnect]:
    sockets, connect = ListeningSockets(files), RecordingConnect()
    return TcpCheck(sockets, connect), sockets, connect


def test_tcp_check_answers_from_the_table_at_once(files: ProcFiles) -> None:
    check, sockets, connect = tcpCheck(files)
    clock = Clock()
    assert check.check(clock, "127.0.0.2", InstanceInfo("H", "A", tcp=4001), 0.5) is None
    with pytest.raises(ConnectError, match=r"127.0.0.2:4999: nothing listens there"):
        check.check(clock, "127.0.0.2", InstanceInfo("H", "B", tcp=4999), 0.5)
    assert connect.asked == []
    assert sockets.reads == 1


def test_tcp_check_connects_where_the_table_cannot_tell(files: ProcFiles) -> None:
    check, _, connect = tcpCheck(files)
    clock = Clock()
    remote = InstanceInfo("H", "A", tcp=4001)
    pipe = InstanceInfo("H", "P", np=r"\\H\pipe\sql\query")
    dualStack = InstanceInfo("H", "D", tcp=4005)
    for host, info in [("203.0.113.9", remote), ("127.0.0.2", pipe),
                       ("127.0.0.2", dualStack)]:
        result = check.check(clock, host, info, 0.5)
        assert result is not None
    assert connect.asked == [("203.0.113.9", remote), ("127.0.0.2", pipe),
                             ("127.0.0.2", dualStack)]


def test_checks_within_max_age_share_one_read(files: ProcFiles) -> None:
    check, sockets, _ = tcpCheck(files)
    clock = Clock()
    gone = InstanceInfo("H", "A", tcp=4001)
    assert check.check(clock, "127.0.0.2", gone, 0.5) is None
    files.tcp.write_text(table())
    clock.advance(MAX_AGE / 2)
    assert check.check(clock, "127.0.0.2", gone, 0.5) is None, "the same read"
    assert sockets.reads == 1
    clock.advance(MAX_AGE / 2)
    with pytest.raises(ConnectError):
        check.check(clock, "127.0.0.2", gone, 0.5)
    assert sockets.reads == 2


def test_without_the_kernels_table_it_connects_and_says_so_once(tmp_path: Path) -> None:
    check, _, connect = tcpCheck(ProcFiles(tcp=tmp_path / "missing", netlink=False))
    clock = Clock()
    info = InstanceInfo("H", "A", tcp=4001)
    with capturedLogs() as events:
        for _ in range(3):
            check.check(clock, "127.0.0.1", info, 0.5)
            clock.advance(MAX_AGE)
    assert len(connect.asked) == 3
    warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
    assert len(warnings) == 1
    assert "connect instead" in warnings[0]["log_format"]


def test_the_checks_by_name() -> None:
    assert isinstance(checkNamed("tcp"), TcpCheck)
    assert checkNamed("connect").name == "connect"


# The real kernel, on loopback


def listener(backlog: int = 16) -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    return server


@pytest.mark.parametrize("netlink", [True, False], ids=["sock_diag", "/proc/net/tcp"])
def test_the_kernel_lists_a_real_listener(netlink: bool) -> None:
    files = ProcFiles(netlink=netlink)
    with listener() as server:
        port = server.getsockname()[1]
        assert readListeningTable(files).find("127.0.0.1", port) is Found.LISTENING
    assert readListeningTable(files).find("127.0.0.1", port) is Found.NOTHING


def test_the_kernel_tells_a_full_accept_queue() -> None:
    with listener(backlog=0) as server:
        port = server.getsockname()[1]
        clients = [socket.socket() for _ in range(2)]
        try:
            for client in clients:
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
            deadline = time.monotonic() + 5
            while readListeningTable().find("127.0.0.1", port) is not Found.FULL:
                assert time.monotonic() < deadline, "the queue never showed full"
                time.sleep(0.01)
        finally:
            for client in clients:
                client.close()
