"""
The kernel's table of listening TCP sockets, for health checks on the
node's own host.

A connect to an address of this host finds a listener if a socket listens
on that address and port, or on the wildcard address and that port, and
its accept queue is not full.  Linux tells all three: the listening
sockets of the network namespace, with their accept queues, through
C{sock_diag} netlink (what C{ss -lnt} reads; only the listeners are
visited), or, without it, in C{/proc/net/tcp} and C{/proc/net/tcp6}
(state C{0A}; every TCP socket of the host is listed, and not the
queues); the host's own addresses in C{/proc/net/fib_trie} (routes of type
C{host LOCAL}) and C{/proc/net/if_inet6}.  One read answers for every
instance at once, where a connect per instance costs a connection each.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
import struct
import sys
from functools import lru_cache
from pathlib import Path

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: Seconds of reactor time for which one read of the table answers every
#: check: a node's checks run together (L{srp.server.health.CheckSchedule}),
#: and 1,000 of them take 10 to 50 ms.
MAX_AGE = 0.1

_ANY4 = bytes(4)
_ANY6 = bytes(16)
#: The prefix of an IPv4-mapped IPv6 address (C{::ffff:a.b.c.d}).
_MAPPED = bytes(10) + b"\xff\xff"
_LOOPBACK4 = (0x7F000000, 0xFF000000)
_LOOPBACK6 = socket.inet_pton(socket.AF_INET6, "::1")
#: A LISTEN line of /proc/net/tcp or tcp6: its local address and port.
_LISTENING = re.compile(rb"^ *\d+: ([0-9A-F]+):([0-9A-F]{4}) [0-9A-F]+:[0-9A-F]{4} 0A ",
                        re.MULTILINE)
_LEAF = re.compile(r"\|-- ([0-9.]+)$")
_LOCAL_ROUTE = re.compile(r"/(\d+) host LOCAL$")

# sock_diag netlink: linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")
#: inet_diag_msg after the header: family, state, timer, retrans, sport,
#: dport (big-endian), source and destination addresses (16 bytes each),
#: interface, cookie; then expires, rqueue (the accept queue of a
#: listener) and wqueue (its backlog).
_QUEUES = struct.Struct("=II")
_QUEUES_AT = 56


class Found(enum.Enum):
    """What a connect to an address of this host would find there."""

    LISTENING = "listening"
    NOTHING = "nothing listens there"
    FULL = "its listener's accept queue is full"


def _key(packed: bytes, port: int) -> bytes:
    if packed.startswith(_MAPPED):
        packed = packed[len(_MAPPED):]
    return packed + port.to_bytes(2, "big")


@frozen
class ListeningTable:
    """
    The listening TCP sockets and the own addresses of this host, as read
    at one moment.

    @ivar listeners: each listening socket's packed address and port (2
        bytes, big-endian); an IPv4-mapped IPv6 listener under its IPv4
        address, the wildcards as all zeros.
    @ivar full: those whose accept queue is full (known from netlink only).
    @ivar networks4: this host's IPv4 addresses, as (network, mask) integers.
    @ivar addresses6: this host's IPv6 addresses, packed.
    """

    listeners: frozenset[bytes]
    full: frozenset[bytes] = frozenset()
    networks4: tuple[tuple[int, int], ...] = (_LOOPBACK4,)
    addresses6: frozenset[bytes] = frozenset({_LOOPBACK6})

    def isLocal(self, packed: bytes) -> bool:
        """Whether the packed address is one of this host's."""
        if len(packed) == 16:
            return packed in self.addresses6
        number = int.from_bytes(packed, "big")
        # A loop: any() over a generator costs three times as much, per check.
        for network, mask in self.networks4:  # noqa: SIM110
            if number & mask == network:
                return True
        return False

    def find(self, host: str, port: int) -> Found | None:
        """
        What a connect to C{host:port} would find, or None when this table
        cannot tell: C{host} is not an address of this host, or only a
        dual-stack C{::} listener could take an IPv4 connection (whether it
        does depends on its C{IPV6_V6ONLY}).
        """
        packed = _packed(host)
        if packed is None or not self.isLocal(packed):
            return None
        suffix = port.to_bytes(2, "big")
        # The kernel gives a connection to the listener of its address
        # before the wildcard's.
        for key in (packed + suffix, (_ANY4 if len(packed) == 4 else _ANY6) + suffix):
            if key in self.listeners:
                return Found.FULL if key in self.full else Found.LISTENING
        if len(packed) == 4 and _ANY6 + suffix in self.listeners:
            return None
        return Found.NOTHING


@lru_cache(maxsize=1024)
def _packed(host: str) -> bytes | None:
    """
    C{host} as 4 bytes (an IPv4 or IPv4-mapped IPv6 address) or 16, or
    None if it is not a literal IP address.
    """
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return None
    return packed[len(_MAPPED):] if packed.startswith(_MAPPED) else packed


def netlinkListeners(family: int) -> tuple[set[bytes], set[bytes]]:
    """
    The listening TCP sockets of C{family} from C{sock_diag} netlink: their
    keys, and the keys of those whose accept queue is full.

    @raise OSError: if the kernel has no C{sock_diag} (not Linux).
    """
    size = 4 if family == socket.AF_INET else 16
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    request += bytes(48)  # inet_diag_sockid: any socket
    listeners: set[bytes] = set()
    full: set[bytes] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.sendto(_HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                 _NLM_F_REQUEST_DUMP, 1, 0) + request, (0, 0))
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return listeners, full
                if kind == _NLMSG_ERROR or length < _HEADER.size:
                    raise OSError("sock_diag refused the request")
                body = offset + _HEADER.size
                # The source address, then the port as it is on the wire.
                key = data[body + 8:body + 8 + size] + data[body + 4:body + 6]
                if size == 16 and key.startswith(_MAPPED):
                    key = key[len(_MAPPED):]
                listeners.add(key)
                queued, backlog = _QUEUES.unpack_from(data, body + _QUEUES_AT)
                if queued > backlog:
                    full.add(key)
                offset += (length + 3) & ~3


def procListeners(tcp: bytes, tcp6: bytes) -> set[bytes]:
    """The listening sockets in the text of /proc/net/tcp and /proc/net/tcp6."""
    found = set()
    for text in (tcp, tcp6):
        for hexAddress, hexPort in _LISTENING.findall(text):
            # The kernel prints each 32-bit word of an address as a native integer.
            packed = b"".join(int(hexAddress[i:i + 8], 16).to_bytes(4, sys.byteorder)
                              for i in range(0, len(hexAddress), 8))
            found.add(_key(packed, int(hexPort, 16)))
    return found


def localNetworks4(fibTrie: str) -> tuple[tuple[int, int], ...]:
    """This host's IPv4 addresses, from the C{host LOCAL} routes of /proc/net/fib_trie."""
    networks = {_LOOPBACK4}
    leaf = None
    for line in fibTrie.splitlines():
        line = line.strip()
        if matched := _LEAF.search(line):
            leaf = matched.group(1)
        elif (route := _LOCAL_ROUTE.search(line)) and leaf is not None:
            network = ipaddress.IPv4Network(f"{leaf}/{route.group(1)}", strict=False)
            networks.add((int(network.network_address), int(network.netmask)))
    return tuple(sorted(networks))


def localAddresses6(ifInet6: str) -> frozenset[bytes]:
    """This host's IPv6 addresses, from /proc/net/if_inet6 (and C{::1})."""
    found = {_LOOPBACK6}
    for line in ifInet6.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            found.add(bytes.fromhex(fields[0]))
    return frozenset(found)


@frozen
class ProcFiles:
    """
    Where the kernel's tables are read; C{netlink} False reads the
    listeners from C{tcp} and C{tcp6} only (as without C{sock_diag}, and in
    tests, with other paths).
    """

    tcp: Path = Path("/proc/net/tcp")
    tcp6: Path = Path("/proc/net/tcp6")
    fibTrie: Path = Path("/proc/net/fib_trie")
    ifInet6: Path = Path("/proc/net/if_inet6")
    netlink: bool = True


def _readOr(path: Path, default: bytes = b"") -> bytes:
    """The contents of C{path}, or C{default} if it does not exist (no IPv6)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return default


def readListeningTable(files: ProcFiles = ProcFiles()) -> ListeningTable:
    """
    Read the kernel's tables now.

    @raise OSError: if neither netlink nor /proc/net/tcp can be read (not Linux).
    """
    listeners: set[bytes] = set()
    full: set[bytes] = set()
    try:
        if not files.netlink:
            raise OSError("netlink not wanted")
        for family in (socket.AF_INET, socket.AF_INET6):
            found, queued = netlinkListeners(family)
            listeners |= found
            full |= queued
    except OSError:
        listeners = procListeners(files.tcp.read_bytes(), _readOr(files.tcp6))
    return ListeningTable(
        frozenset(listeners), frozenset(full),
        localNetworks4(_readOr(files.fibTrie).decode("ascii", "replace")),
        localAddresses6(_readOr(files.ifInet6).decode("ascii", "replace")))


class ListeningSockets:
    """
    The current L{ListeningTable}, read again when the one held is older
    than C{maxAge} seconds of the reactor's time: every check that runs
    within that time shares one read.
    """

    log = Logger()

    def __init__(self, files: ProcFiles = ProcFiles(), maxAge: float = MAX_AGE) -> None:
        self.files = files
        self.maxAge = maxAge
        #: How many times the tables were read.
        self.reads = 0
        self._read: tuple[float, ListeningTable | None] | None = None

    def current(self, clock: IReactorTime) -> ListeningTable | None:
        """The table as of at most C{maxAge} ago, or None if the kernel's cannot be read."""
        now = clock.seconds()
        if self._read is not None and 0 <= now - self._read[0] < self.maxAge:
            return self._read[1]
        self.reads += 1
        table: ListeningTable | None
        try:
            table = readListeningTable(self.files)
        except OSError as e:
            table = None
            if self._read is None or self._read[1] is not None:
                self.log.warn("Cannot read the kernel's table of listening sockets ({error}): "
                              "tcp health checks connect instead", error=str(e))
        self._read = (now, table)
        return table
