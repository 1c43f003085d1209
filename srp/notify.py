"""
The systemd readiness protocol (C{sd_notify}): one datagram to C{$NOTIFY_SOCKET}.

With C{Type=notify}, systemd waits for C{READY=1} before it counts the
service as started (and starts what comes C{After=} it), and shows
C{STOPPING=1} as the service stopping.  The socket is an C{AF_UNIX}
datagram socket; a name starting with C{@} is in the abstract namespace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.logger import Logger

#: The environment variable systemd names its notification socket in.
NOTIFY_SOCKET = "NOTIFY_SOCKET"

log = Logger()


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send C{state} (such as C{READY=1}) to the service manager, if one asked.

    @return: whether it was sent; C{False} outside systemd.  A socket that
        cannot be reached is one warning, never an error: the node runs on.
    """
    address = (os.environ if environ is None else environ).get(NOTIFY_SOCKET, "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode("utf-8"), address)
    except OSError as e:
        log.warn("Cannot tell the service manager {state}: {error}", state=state,
                 error=str(e))
        return False
    return True
