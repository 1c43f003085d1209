"""
Transports: endpoints built from the entries of an instance's port map, and
the listeners that fill those entries in.

Each transport is an L{IPortMapTransport} named after its protocol in the
port map: srp's own (C{tcp}, C{np}, C{via}) come first, then those of
plugins (L{transportNamed}).  L{endpointsFor} turns a candidate into client
endpoints in the order of a transport preference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint

from srp.interfaces import IPortMapTransport
from srp.plugins import named, namedOrRaise, names
from srp.records import InstanceInfo
from srp.transports.np import PipeTransport
from srp.transports.tcp import TCPTransport
from srp.transports.via import VIATransport

#: The default preference: VIA, then TCP, then named pipes.
DEFAULT_PREFERENCE = ("via", "tcp", "np")
_BUILTINS = (VIATransport(), TCPTransport(), PipeTransport())


def transportNamed(name: str) -> IPortMapTransport:
    """
    The transport of the port-map protocol C{name}: srp's own, else a plugin's.

    @raise ValueError: naming the transports there are, if none is called C{name}.
    """
    return namedOrRaise(IPortMapTransport, "transport", name, _BUILTINS)


def transportNames() -> list[str]:
    """The names of every transport: srp's own, then the plugins'."""
    return names(IPortMapTransport, _BUILTINS)


def endpointsFor(reactor: Any, host: str, info: InstanceInfo, prefer: Sequence[str],
                 timeout: float) -> Iterator[tuple[str, IStreamClientEndpoint]]:
    """
    Each (transport, endpoint) that C{info} offers, in the order of C{prefer};
    a name no transport has is passed over.
    """
    for name in prefer:
        transport = named(IPortMapTransport, name, _BUILTINS)
        if transport is None:
            continue
        endpoint = transport.endpointFor(reactor, host, info, timeout)
        if endpoint is not None:
            yield name, endpoint
