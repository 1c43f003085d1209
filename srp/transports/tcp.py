"""
TCP: the C{tcp} entry of a port map, with Twisted's own endpoints, no Nagle
delay and short dead-peer detection.
"""

from __future__ import annotations

import socket
from typing import Any

from attrs import evolve
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IPortMapTransport, NodeListening
from srp.records import InstanceInfo

#: Milliseconds unacknowledged data may wait before the kernel gives up on a peer.
USER_TIMEOUT_MS = 3000
#: Keepalive: seconds idle before the first probe, seconds between probes, probes.
KEEPALIVE = (1, 1, 3)


@implementer(IPlugin, IPortMapTransport)
class TCPTransport:
    """The C{tcp} entry of a port map: a TCP port on the instance's host."""

    name = "tcp"

    def endpointFor(self, reactor: Any, host: str, info: InstanceInfo,
                    timeout: float) -> IStreamClientEndpoint | None:
        """A TCP endpoint to C{info}'s tcp port on C{host}, or L{None} if it has none."""
        if info.tcp is None:
            return None
        kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        return kind(reactor, host, info.tcp, timeout=timeout)

    def listen(self, reactor: Any, info: InstanceInfo, factory: IProtocolFactory,
               node: NodeListening) -> tuple[IListeningPort, InstanceInfo]:
        """Listen on C{info}'s tcp port (any if none) of the node's address."""
        port: IListeningPort = reactor.listenTCP(info.tcp or 0, factory, interface=node.host)
        return port, evolve(info, tcp=port.getHost().port)  # type: ignore[attr-defined]


def detectDeadPeers(transport: ITransport) -> None:
    """
    Make a TCP connection notice a peer that vanished without FIN or RST.

    Sets TCP_NODELAY, keepalive probes every second after a second idle, and
    TCP_USER_TIMEOUT so that unacknowledged data fails the connection in
    seconds, not the kernel's default of many minutes.
    """
    handle = getattr(transport, "getHandle", lambda: None)()
    if not isinstance(handle, socket.socket) or handle.type != socket.SOCK_STREAM:
        return
    try:
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = KEEPALIVE
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    except (OSError, AttributeError):
        pass  # not Linux, or not TCP: keep the defaults
