"""
Transports: endpoints built from the entries of an instance's port map.

L{endpointsFor} turns a candidate into client endpoints in the order of a
transport preference; each transport module knows one protocol of the port
map (C{tcp}, C{np}, C{via}).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint

from srp.records import InstanceInfo
from srp.transports import np, tcp, via

#: The default preference: VIA, then TCP, then named pipes (DESIGN.md).
DEFAULT_PREFERENCE = ("via", "tcp", "np")
#: The endpoint builder of each transport.
BUILDERS = {"tcp": tcp.endpointFor, "np": np.endpointFor, "via": via.endpointFor}


def endpointsFor(reactor: Any, host: str, info: InstanceInfo, prefer: Sequence[str],
                 timeout: float) -> Iterator[tuple[str, IStreamClientEndpoint]]:
    """Each (transport, endpoint) that C{info} offers, in the order of C{prefer}."""
    for name in prefer:
        builder = BUILDERS.get(name)
        if builder is None:
            continue
        endpoint = builder(reactor, host, info, timeout)
        if endpoint is not None:
            yield name, endpoint
