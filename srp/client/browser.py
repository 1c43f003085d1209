"""
Ask a SQL Server Browser (or an srp node) over UDP: one server, or broadcast.

These are the plain [MC-SQLR] exchanges behind C{srp resolve}, C{srp
enumerate} and C{srp browse}; they work against any [MC-SQLR] server.
"""

from __future__ import annotations

import ipaddress
import typing
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from srp.wire import Request, Response, WireError, decodeResponse
from srp.wire.mcsqlr import BROWSER_PORT, MAX_DATAGRAM


class QueryFailed(Exception):
    """A query could not be made or got no answer; the message says why."""


class NoAnswer(QueryFailed):
    """Nobody answered a query in time; the message says whom we asked."""


@frozen
class Answer:
    """A response and the address it came from."""

    source: tuple[str, int]
    response: Response


def _isIPv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def canonicalAddress(host: str) -> str:
    """
    C{host} as the source of a reply shows it, for comparing addresses: an
    IPv4-mapped IPv6 address (C{::ffff:127.0.0.2}) as its IPv4 address, any
    other IP literal in its compressed form, a name as it is.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


async def hostAddress(reactor: Any, host: str) -> str:
    """
    C{host} as an IP address: literals as they are, names through the reactor's resolver.

    @raise QueryFailed: if the name does not resolve.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(await reactor.resolve(host))
    except DNSLookupError:
        raise QueryFailed(f"cannot resolve the host name {host!r}") from None


class _Query(DatagramProtocol):
    """Sends one request until answered (or for a window) and collects replies."""

    log = Logger()

    def __init__(self, request: bytes, targets: Sequence[tuple[str, int]],
                 collect: bool) -> None:
        self.request = request
        self.targets = targets
        self.hosts = {canonicalAddress(host) for host, _ in targets}
        self.collect = collect
        self.answers: list[Answer] = []
        self.done: Deferred[None] = Deferred()
        self.malformed = 0
        self.sendError: OSError | None = None

    def send(self) -> None:
        """Send the request (again); a failure to send ends the query."""
        sent = 0
        for target in self.targets:
            try:
                self.transport.write(self.request, target)  # type: ignore[union-attr]
            except OSError as e:
                self.sendError = e
            else:
                sent += 1
        if not sent:
            self.finish()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        source = (addr[0], addr[1])
        if not self.collect and canonicalAddress(source[0]) not in self.hosts:
            return
        try:
            response = decodeResponse(datagram)
        except WireError as e:
            self.malformed += 1
            self.log.warn("Ignored a malformed reply from {host}: {error}",
                          host=source[0], error=str(e))
            return
        self.answers.append(Answer(source, response))
        if not self.collect:
            self.finish()

    def finish(self) -> None:
        """Stop waiting: the first answer came, or the time is up."""
        if not self.done.called:
            self.done.callback(None)


class RepeatedQuery(typing.Protocol):
    """A datagram query that L{repeatUntilDone} can drive."""

    done: Deferred[None]

    def send(self) -> None:
        """Send the request (again) to every target."""

    def finish(self) -> None:
        """Stop waiting; fire C{done}."""


async def repeatUntilDone(reactor: Any, query: RepeatedQuery, hosts: Sequence[str],
                          timeout: float, attempts: int, broadcast: bool = False) -> None:
    """
    Listen on an ephemeral port with C{query}, send its request C{attempts}
    times within C{timeout} seconds, and return when it is done or the time is up.
    """
    ipv6 = any(_isIPv6(host) for host in hosts)
    port = reactor.listenUDP(0, query, interface="::" if ipv6 else "",
                             maxPacketSize=MAX_DATAGRAM)
    if broadcast:
        port.setBroadcastAllowed(True)
    sender = LoopingCall(query.send)
    sender.clock = reactor
    sender.start(timeout / attempts)
    timer = reactor.callLater(timeout, query.finish)
    try:
        await query.done
    finally:
        if timer.active():
            timer.cancel()
        if sender.running:
            sender.stop()
        await port.stopListening()


async def _exchange(
    reactor: Any, request: Request, targets: Sequence[tuple[str, int]], timeout: float,
    attempts: int, collect: bool, broadcast: bool = False,
) -> list[Answer]:
    query = _Query(request.encode(), targets, collect)
    await repeatUntilDone(reactor, query, [host for host, _ in targets], timeout, attempts,
                          broadcast)
    if query.sendError is not None and not query.answers:
        where = ", ".join(host for host, _ in targets)
        raise QueryFailed(f"cannot send to {where} port {targets[0][1]}: "
                          f"{query.sendError.strerror or query.sendError}")
    return query.answers


async def query(
    reactor: Any, host: str, request: Request, port: int = BROWSER_PORT,
    timeout: float = 2.0, attempts: int = 3, addresses: Sequence[str] = (),
) -> Answer:
    """
    Send C{request} to a server and return its first valid reply.

    The request goes to C{host}, or to every one of C{addresses} at once
    (the addresses of a cluster; the first answer wins).  It is repeated
    C{attempts} times within C{timeout} seconds, as UDP may lose it; servers
    answer repeats harmlessly.

    @raise NoAnswer: if no valid reply came within C{timeout}.
    """
    hosts = list(addresses) or [await hostAddress(reactor, host)]
    answers = await _exchange(reactor, request, [(h, port) for h in hosts], timeout,
                              attempts, False)
    if not answers:
        raise NoAnswer(f"no answer from {', '.join(addresses) or host} port {port} "
                       f"within {timeout:g} s")
    return answers[0]


async def browse(
    reactor: Any, request: Request, address: str = "255.255.255.255",
    port: int = BROWSER_PORT, window: float = 2.0, attempts: int = 2,
) -> list[Answer]:
    """
    Broadcast C{request} and collect every reply that arrives within C{window} seconds.

    Duplicate replies (from the repeated request) are collapsed.
    """
    answers = await _exchange(
        reactor, request, [(address, port)], window, attempts, True, broadcast=True
    )
    unique: dict[tuple[tuple[str, int], Response], Answer] = {}
    for answer in answers:
        unique.setdefault((answer.source, answer.response), answer)
    return list(unique.values())

