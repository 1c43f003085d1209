"""TCP: Twisted's own endpoints, with no Nagle delay and short dead-peer detection."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport

from srp.records import InstanceInfo

#: Milliseconds unacknowledged data may wait before the kernel gives up on a peer.
USER_TIMEOUT_MS = 3000
#: Keepalive: seconds idle before the first probe, seconds between probes, probes.
KEEPALIVE = (1, 1, 3)


def endpointFor(reactor: Any, host: str, info: InstanceInfo,
                timeout: float) -> IStreamClientEndpoint | None:
    """A TCP endpoint to C{info}'s tcp port on C{host}, or L{None} if it has none."""
    if info.tcp is None:
        return None
    kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    return kind(reactor, host, info.tcp, timeout=timeout)


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
