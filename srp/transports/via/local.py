"""
The local path: VIA between processes of one host without the network stack.

As VI hardware takes the loopback path without the network stack, a
listener also listens on an abstract AF_UNIX socket named from its address
and port (L{localName}), and a client whose path's address is one of this
host's tries that socket first (L{localNames}), falling back to TCP.  Only
processes of one user use it (both sides check C{SO_PEERCRED}: L{srp.transports.peercred}).
"""

from __future__ import annotations

import ipaddress
import socket


def localName(address: str, port: int) -> str:
    """
    The abstract AF_UNIX socket of the VIA listener on TCP C{address}:C{port}:
    C{"\\0srp-via-127.0.0.2-40000"}.
    """
    return f"\0srp-via-{address}-{port}"


def isLocalAddress(host: str) -> bool:
    """
    Whether C{host} is an IP address of this host (in this network namespace):
    a loopback address, or one a socket can be bound to.  Names are not
    resolved: a name is never local.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def localNames(host: str, port: int) -> list[str]:
    """
    The abstract sockets a client tries, in order, for the path C{host}:C{port}:
    the listener on that address, then one on every address of its family
    (an IPv6 one, dual-stack, also takes IPv4).  None if C{host} is not local.
    """
    if not isLocalAddress(host):
        return []
    address = ipaddress.ip_address(host)
    anywhere = ["0.0.0.0", "::"] if address.version == 4 else ["::"]
    names = []
    for candidate in [str(address), *anywhere]:
        name = localName(candidate, port)
        if name not in names:
            names.append(name)
    return names
