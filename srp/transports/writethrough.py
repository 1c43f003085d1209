"""
Writing through to the kernel: send at once what a Twisted stream transport
would otherwise send on the reactor's next turn.

A Twisted transport keeps written bytes until the reactor finds the socket
writable.  On one host that costs a reactor turn per message; VI hardware
and pipes are used for the opposite.  When nothing waits in the transport's
buffer, these helpers hand the bytes to the socket directly, in order, and
leave whatever the socket does not take to the transport, which still
finds out about a broken connection.  They rely on two attributes of
Twisted's C{FileDescriptor} (C{dataBuffer}, C{_tempDataLen}) and fall
back to plain writes where those are missing.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

Buffer = bytes | bytearray | memoryview


def directSocket(transport: Any) -> socket.socket | None:
    """The socket of C{transport} if it can be written through, else L{None}."""
    handle = getattr(transport, "getHandle", lambda: None)()
    if (isinstance(handle, socket.socket) and hasattr(transport, "dataBuffer")
            and hasattr(transport, "_tempDataLen")):
        return handle
    return None


def writeThrough(transport: Any, sock: socket.socket | None,
                 parts: Sequence[Buffer]) -> None:
    """Send C{parts} in order: to the socket at once if nothing is queued, the rest queued."""
    if (sock is not None and not transport.dataBuffer and not transport._tempDataLen
            and transport.connected and not transport.disconnecting):
        try:
            sent = sock.sendmsg(parts)
        except OSError:
            sent = 0  # full (EAGAIN), or broken: the transport finds out
        rest: list[Buffer] = []
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
            else:
                rest.append(memoryview(part)[sent:] if sent else part)
                sent = 0
        if not rest:
            return
        parts = rest
    transport.write(b"".join(parts))


class WriteThroughProtocol(ProtocolWrapper):
    """Gives the wrapped protocol a transport whose writes go through at once."""

    _socket: socket.socket | None = None

    def makeConnection(self, transport: Any) -> None:
        self._socket = directSocket(transport)
        sendBuffer = getattr(self.factory, "sendBuffer", None)
        if self._socket is not None and sendBuffer:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sendBuffer)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        writeThrough(self.transport, self._socket, (data,))

    def writeSequence(self, data: Sequence[bytes]) -> None:
        writeThrough(self.transport, self._socket, list(data))


class WriteThroughFactory(WrappingFactory):
    """
    Wraps a factory's protocols in L{WriteThroughProtocol}; C{sendBuffer}
    sets the sockets' send buffer (bytes), if given.
    """

    protocol = WriteThroughProtocol
    noisy = False

    def __init__(self, wrappedFactory: Any, sendBuffer: int | None = None) -> None:
        super().__init__(wrappedFactory)
        self.sendBuffer = sendBuffer
