"""
Who is at the other end of a UNIX socket (C{SO_PEERCRED}).

Abstract AF_UNIX sockets have no file mode: any process of the host may
connect to one, or bind its name first.  The via transport's local path and
the cluster's socket hand-over both talk only to processes of their own
user, and ask the kernel who the peer is.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

_UCRED = struct.Struct("3i")


def peerUser(transport: Any) -> int | None:
    """The user id of the process at the other end of a UNIX socket, if known."""
    try:
        credentials = transport.getHandle().getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    _, uid, _ = _UCRED.unpack(credentials)
    return int(uid)
