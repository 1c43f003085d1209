"""
The C{srp:} client endpoint: connect to an instance by its C{cluster/instance} name.

    endpoint = clientFromString(reactor, "srp:db1/SALES")

resolves C{SALES} through the SQL Server Browser ([MC-SQLR]) at C{db1} and
connects to the TCP port it announces.  It is an ordinary
L{IStreamClientEndpoint}, so C{ClientService} and the rest of Twisted work
with it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.client.browser import BROWSER_PORT, QueryFailed, query
from srp.wire import InstanceRequest, InstancesResponse, WireError


class ResolutionError(ConnectError):
    """The instance could not be resolved to a place to connect to."""


@implementer(IStreamClientEndpoint)
class SRPClientEndpoint:
    """
    Connects to the instance C{instance} of C{cluster}, wherever its port is.

    @param cluster: host name or address of the cluster's resolver (UDP 1434).
    @param timeout: seconds to wait for the resolver, and for the TCP connection.
    """

    def __init__(self, reactor: Any, cluster: str, instance: str,
                 port: int = BROWSER_PORT, timeout: float = 2.0) -> None:
        self._reactor = reactor
        self.cluster = cluster
        self.instance = instance
        self.port = port
        self.timeout = timeout
        self._request = InstanceRequest(instance)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Resolve the instance, then connect C{protocolFactory} to its TCP port."""
        return ensureDeferred(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: IProtocolFactory) -> IProtocol:
        try:
            answer = await query(self._reactor, self.cluster, self._request,
                                 port=self.port, timeout=self.timeout)
        except QueryFailed as e:
            raise ResolutionError(
                string=f"cannot resolve {self.cluster}/{self.instance}: {e}") from None
        assert isinstance(answer.response, InstancesResponse)
        tcp = answer.response.instances[0].tcp if answer.response.instances else None
        if tcp is None:
            raise ResolutionError(
                string=f"{self.cluster}/{self.instance} announces no tcp port")
        target = HostnameEndpoint(self._reactor, answer.source[0], tcp, timeout=self.timeout)
        protocol: IProtocol = await target.connect(protocolFactory)
        return protocol


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SRPClientParser:
    """
    Parses C{srp:CLUSTER/INSTANCE[:port=1434][:timeout=2]} into an L{SRPClientEndpoint}.

    Escape colons of an IPv6 cluster address: C{srp:\\:\\:1/SALES}.
    """

    prefix = "srp"

    def parseStreamClient(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamClientEndpoint:
        if len(args) != 1 or "/" not in str(args[0]):
            given = ":".join(map(str, args))
            raise ValueError(f"srp endpoint needs CLUSTER/INSTANCE, not {given!r}")
        cluster, _, instance = str(args[0]).rpartition("/")
        unknown = set(kwargs) - {"port", "timeout"}
        if unknown:
            raise ValueError(f"srp endpoint has no option {sorted(unknown)[0]!r}; "
                             "known: port, timeout")
        try:
            return SRPClientEndpoint(reactor, cluster.strip("[]"), instance,
                                     port=int(str(kwargs.get("port", BROWSER_PORT))),
                                     timeout=float(str(kwargs.get("timeout", 2.0))))
        except WireError as e:
            raise ValueError(f"srp endpoint: {e}") from None
