"""
Records shared by the client and server sides.

The values that travel are defined with their codecs in L{srp.wire}; this
module gathers the ones both sides hold, under one import, and adds
L{ProxyRoute}, which the node's configuration and C{srp proxy} both make.
"""

from __future__ import annotations

import ipaddress

from attrs import field, frozen

from srp.wire import InstanceRequest, WireError
from srp.wire.instances import (
    InstanceInfo,
    Registration,
    ViaAddress,
    ViaInfo,
    checkPort,
    instanceKey,
)

__all__ = ["InstanceInfo", "ProxyRoute", "Registration", "ViaAddress", "ViaInfo",
           "instanceKey", "proxyRoute"]

#: Client connections a proxy listener keeps open at once, by default.
DEFAULT_MAX_CONNECTIONS = 1024


@frozen
class ProxyRoute:
    """
    A proxy listener: the TCP address it listens on, the instance whose
    current place its connections are spliced to, and how that is reached.
    """

    host: str
    port: int
    cluster: str
    instance: str
    #: Transports in order of preference (empty: the client's default).
    prefer: tuple[str, ...] = ()
    #: The instance verifier's name (C{none}, C{tds}, C{hello}, or a plugin's).
    verify: str = "none"
    #: Seconds for each connection attempt to a place of the instance.
    timeout: float = 2.0
    #: Client connections open at once; more are closed as they come.
    maxConnections: int = DEFAULT_MAX_CONNECTIONS
    #: The cluster's addresses, if not those C{cluster} resolves to.
    addresses: tuple[str, ...] = field(default=())

    @property
    def listen(self) -> str:
        """C{HOST:PORT} (an IPv6 host in brackets), for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def target(self) -> str:
        """C{CLUSTER/INSTANCE}, for messages."""
        return f"{self.cluster}/{self.instance}"


def proxyRoute(listen: str, target: str, **options: object) -> ProxyRoute:
    """
    The L{ProxyRoute} from C{listen} (C{ADDRESS:PORT}, an IPv6 address in
    brackets) and C{target} (C{CLUSTER/INSTANCE}); C{options} are its other fields.

    @raise WireError: one line naming what is wrong.
    """
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise WireError(f"listen address {listen!r} is not ADDRESS:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise WireError(f"listen address {listen!r}: {host!r} is not an IP address") from None
    checkPort("listen port", int(port))
    cluster, sep, instance = target.rpartition("/")
    if not sep or not cluster or not instance:
        raise WireError(f"proxy target {target!r} is not CLUSTER/INSTANCE")
    InstanceRequest(instance)  # refuse a name that cannot travel
    route = ProxyRoute(host, int(port), cluster.strip("[]"), instance,
                       **options)  # type: ignore[arg-type]
    if route.maxConnections < 1 or not route.timeout > 0:
        raise WireError("max connections must be at least 1 and the timeout more than 0 s, "
                        f"not {route.maxConnections} and {route.timeout}")
    return route
