"""
Public test helpers for code that uses srp, in the spirit of C{treq.testing}.

L{FakeDatagramTransport} records what a L{DatagramProtocol} sends, so that
responders can be tested without sockets; L{exchange} runs one request
through a protocol and returns its replies.  L{FakeNetwork} is a whole
UDP network on a L{Clock}, with loss, delay, duplication and partitions,
for deterministic tests of clusters.  L{NodeProcess} runs a real
C{srp serve} on a free loopback address (L{freeLoopbackAddress}).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.internet.task import Clock, LoopingCall
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.client.failover import IFailoverAware
from srp.records import instanceKey
from srp.server.config import loadConfig
from srp.wire.errors import WireError
from srp.wire.tds import (
    PRELOGIN,
    decodePrelogin,
    packetLength,
    preloginResponse,
    requestedInstance,
)


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
                 prefix: Sequence[str] = (), argv: Sequence[str] | None = None) -> None:
        self.config = config
        self.logPath = logPath
        self.executable = executable or str(Path(sys.executable).with_name("srp"))
        #: Run the node through this command, e.g. C{ip netns exec HOST}.
        self.prefix = tuple(prefix)
        #: The whole command line, for a program embedding a node (default:
        #: C{srp serve --config CONFIG}).
        self.argv = tuple(argv) if argv is not None else (
            self.executable, "serve", "--config", str(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> NodeProcess:
        """Start the node and wait for its ready line; raise if it exits or times out."""
        with open(self.logPath, "wb") as log:
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
        return stopProcess(self.process, timeout)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def writeNodeConfig(path: Path, listen: list[str], instances: list[dict[str, Any]],
                    port: int = 1434, serverName: str = "SRPTEST",
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


@implementer(IListeningPort)
class FakeUDPPort:
    """A UDP port bound on a L{FakeNetwork}; the transport of its protocol."""

    def __init__(self, network: FakeNetwork, host: str, port: int,
                 protocol: DatagramProtocol) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.protocol = protocol
        self.bound = True

    def write(self, datagram: bytes, addr: Any) -> None:
        """Send C{datagram} to C{addr} across the network."""
        self.network.send((self.host, self.port), (addr[0], addr[1]), datagram)

    def getHost(self) -> IPv4Address:
        """The address this port is bound to."""
        return IPv4Address("UDP", self.host, self.port)

    def startListening(self) -> None:
        """Already bound when made."""

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Broadcast is not simulated; accepted for compatibility."""

    def stopListening(self) -> Deferred[None]:
        """Unbind, and stop the protocol."""
        if self.bound:
            self.bound = False
            self.network.unbind(self)
            self.protocol.doStop()
        return succeed(None)


@implementer(IReactorUDP, IReactorTime)
class FakeHostReactor:
    """
    What one host of a L{FakeNetwork} sees as its reactor: UDP on the
    network at its address, and the network's shared clock.
    """

    def __init__(self, network: FakeNetwork, host: str) -> None:
        self.network = network
        self.host = host

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        """Bind C{port} (0: an ephemeral one) at this host's address."""
        host = self.host if interface in ("", "0.0.0.0", "::") else interface
        bound = self.network.bind(host, port, protocol)
        protocol.makeConnection(bound)  # type: ignore[arg-type]
        return bound

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> IDelayedCall:
        """Schedule on the network's clock."""
        return self.network.clock.callLater(delay, callable, *args, **kw)

    def seconds(self) -> float:
        """The network's clock."""
        return self.network.clock.seconds()

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        """Everything scheduled on the network's clock."""
        return self.network.clock.getDelayedCalls()


class FakeNetwork:
    """
    A deterministic UDP network on a L{Clock}, for tests and simulations.

    Datagrams are delayed by a random time within C{delay} (so they can be
    reordered), lost with probability C{loss}, duplicated with probability
    C{duplicate}, and dropped between hosts that L{partition} separates.
    Everything random comes from one seeded generator: a seed replays a run.
    Binding a (host, port) that is bound raises L{CannotListenError}, as
    the operating system does.
    """

    def __init__(self, clock: Clock | None = None, seed: int = 0, loss: float = 0.0,
                 duplicate: float = 0.0, delay: tuple[float, float] = (0.0002, 0.002)) -> None:
        self.clock = clock if clock is not None else Clock()
        self.random = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.sent = 0
        self.dropped = 0
        self._ports: dict[tuple[str, int], FakeUDPPort] = {}
        self._groups: dict[str, int] = {}
        self._nextPort = 40000

    def reactor(self, host: str) -> FakeHostReactor:
        """A reactor for a host with address C{host}."""
        return FakeHostReactor(self, host)

    def bind(self, host: str, port: int, protocol: DatagramProtocol) -> FakeUDPPort:
        """Bind (host, port); port 0 picks a free ephemeral port."""
        if port == 0:
            while (host, self._nextPort) in self._ports:
                self._nextPort += 1
            port = self._nextPort
            self._nextPort += 1
        if (host, port) in self._ports:
            raise CannotListenError(host, port, OSError(errno.EADDRINUSE,
                                                         "Address already in use"))
        bound = self._ports[host, port] = FakeUDPPort(self, host, port, protocol)
        return bound

    def unbind(self, port: FakeUDPPort) -> None:
        """Release C{port}'s address."""
        if self._ports.get((port.host, port.port)) is port:
            del self._ports[port.host, port.port]

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network between C{groups} of host addresses (others stay with the first)."""
        self._groups = {host: n for n, group in enumerate(groups) for host in group}

    def heal(self) -> None:
        """Join every partition again."""
        self._groups = {}

    def reachable(self, source: str, destination: str) -> bool:
        """Whether the partition lets C{source} reach C{destination}."""
        return self._groups.get(source, 0) == self._groups.get(destination, 0)

    def send(self, source: tuple[str, int], destination: tuple[str, int],
             datagram: bytes) -> None:
        """Carry C{datagram}, with this network's delay, loss and duplication."""
        self.sent += 1
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            if self.random.random() < self.loss or not self.reachable(source[0],
                                                                      destination[0]):
                self.dropped += 1
                continue
            self.clock.callLater(self.random.uniform(*self.delay), self._deliver, source,
                                 destination, datagram)

    def _deliver(self, source: tuple[str, int], destination: tuple[str, int],
                 datagram: bytes) -> None:
        port = self._ports.get(destination)
        if port is None or not self.reachable(source[0], destination[0]):
            self.dropped += 1
            return
        port.protocol.datagramReceived(datagram, source)


@frozen
class Exchange:
    """One request of a L{RequestStream}: when it was sent and when (if) answered."""

    sentAt: float
    answeredAt: float | None
    reply: bytes | None


class RequestStream:
    """
    Sends one [MC-SQLR] request to C{target} at a steady C{rate} and records
    which are answered within C{timeout}: the client side of fail-over
    tests and benchmarks, run in the calling thread.

    Each request in flight has a socket of its own, so every reply is
    matched to its request although [MC-SQLR] replies carry no id.  With
    C{resend}, an unanswered request is sent again every C{resend} seconds
    until its timeout, as FreeTDS and tedious do.
    """

    def __init__(self, target: tuple[str, int], request: bytes, rate: float = 100.0,
                 timeout: float = 0.25, resend: float | None = None) -> None:
        self.target = target
        self.request = request
        self.rate = rate
        self.timeout = timeout
        self.resend = resend
        self.exchanges: list[Exchange] = []

    def run(self, duration: float,
            at: Sequence[tuple[float, Callable[[], object]]] = ()) -> list[Exchange]:
        """
        Send for C{duration} seconds, calling each C{at} action C{(delay, action)}
        C{delay} seconds after the start; return every exchange, in order.
        """
        pending = sorted(at, key=lambda item: item[0])
        idle: list[socket.socket] = []
        inFlight: dict[socket.socket, float] = {}
        resent: dict[socket.socket, int] = {}
        selector = selectors.DefaultSelector()
        start = time.monotonic()
        nextSend = start
        try:
            while True:
                now = time.monotonic()
                while pending and now - start >= pending[0][0]:
                    pending.pop(0)[1]()
                    now = time.monotonic()
                if now - start >= duration and not inFlight:
                    break
                if now - start < duration and now >= nextSend:
                    sock = idle.pop() if idle else self._newSocket(selector)
                    try:
                        sock.sendto(self.request, self.target)
                    except OSError:
                        self.exchanges.append(Exchange(now, None, None))
                        idle.append(sock)
                    else:
                        inFlight[sock] = now
                    nextSend += 1.0 / self.rate
                for sock, sentAt in list(inFlight.items()):
                    if self.resend is not None and (now - sentAt) // self.resend > (
                            resent.get(sock, 0)):
                        resent[sock] = resent.get(sock, 0) + 1
                        with contextlib.suppress(OSError):
                            sock.sendto(self.request, self.target)
                    if now - sentAt > self.timeout:
                        del inFlight[sock]
                        resent.pop(sock, None)
                        self.exchanges.append(Exchange(sentAt, None, None))
                        selector.unregister(sock)
                        sock.close()
                wait = max(0.0, min(nextSend - time.monotonic(), 0.005))
                for key, _ in selector.select(wait):
                    sock = key.fileobj  # type: ignore[assignment]
                    try:
                        reply = sock.recv(65535)
                    except OSError:
                        continue
                    if sock in inFlight:
                        sentAt = inFlight.pop(sock)
                        resent.pop(sock, None)
                        self.exchanges.append(Exchange(sentAt, time.monotonic(), reply))
                        idle.append(sock)
        finally:
            for sock in [*idle, *inFlight]:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sock)
                sock.close()
            selector.close()
        self.exchanges.sort(key=lambda e: e.sentAt)
        return self.exchanges

    def _newSocket(self, selector: selectors.BaseSelector) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        return sock


class PreloginResponder(Protocol):
    """
    A server that answers one MS-TDS PRELOGIN as SQL Server does: INSTOPT 0x00
    when the client names C{instance} (or none), 0x01 otherwise.  For testing
    the C{tds} verifier without a SQL Server.
    """

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.buffer = b""
        self.asked: list[str] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        try:
            if len(self.buffer) < 8 or len(self.buffer) < packetLength(self.buffer):
                return
            asked = requestedInstance(decodePrelogin(self.buffer[:packetLength(self.buffer)],
                                                     PRELOGIN))
        except WireError:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.asked.append(asked)
        self.buffer = b""
        valid = asked == "" or instanceKey(asked) == instanceKey(self.instance)
        self.transport.write(preloginResponse(valid))  # type: ignore[union-attr]


def preloginServer(instance: str) -> ServerFactory:
    """A factory of L{PreloginResponder}s for C{instance}."""
    factory = ServerFactory()
    factory.protocol = lambda: PreloginResponder(instance)
    factory.noisy = False
    return factory


@implementer(IFailoverAware)
class LineRequester(LineReceiver):
    """
    Sends numbered request lines at a steady C{rate} through a (fail-over)
    connection to an echo-like server that answers C{NAME N}, resends the
    ones unanswered after C{retry} seconds, and records every answer: the
    client of C{make demo} and of the fail-over tests.
    """

    delimiter = b"\n"

    def __init__(self, clock: IReactorTime, rate: float = 50.0, retry: float = 0.2) -> None:
        self.clock = clock
        self.rate = rate
        self.retry = retry
        self.sent: dict[int, float] = {}
        #: Request number to (time answered, server name), first answer only.
        self.answers: dict[int, tuple[float, str]] = {}
        self.failovers: list[tuple[float, str]] = []
        self.lost: Failure | None = None
        self._next = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def connectionMade(self) -> None:
        self._loop.start(1.0 / self.rate)

    def stop(self) -> None:
        """Stop sending."""
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.sent[self._next] = now
        self.sendLine(str(self._next).encode())
        self._next += 1
        for number, at in list(self.sent.items()):
            if number not in self.answers and now - at > self.retry:
                self.sendLine(str(number).encode())
                self.sent[number] = now

    def lineReceived(self, line: bytes) -> None:
        name, _, number = line.decode("ascii", "replace").partition(" ")
        if number.isdigit():
            self.answers.setdefault(int(number), (self.clock.seconds(), name))

    def failedOver(self, previous: IAddress | None, current: IAddress) -> None:
        self.failovers.append((self.clock.seconds(), str(current)))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = reason
        self.stop()

    def unanswered(self) -> list[int]:
        """Requests sent and never answered."""
        return [n for n in self.sent if n not in self.answers]

    def servers(self) -> list[str]:
        """The server names in the order they answered, runs collapsed."""
        names: list[str] = []
        for _, (_, name) in sorted(self.answers.items()):
            if not names or names[-1] != name:
                names.append(name)
        return names

    def longestGap(self, after: float = 0.0) -> float:
        """The longest time between two consecutive answers (by arrival) after C{after}."""
        times = sorted(at for at, _ in self.answers.values() if at >= after)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
