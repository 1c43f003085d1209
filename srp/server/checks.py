"""
The built-in instance health checks (L{IHealthCheck}): C{none}, C{tcp} and
C{connect}; L{checkNamed} finds them, then plugins (a dropin providing
L{IHealthCheck} and L{IPlugin <twisted.plugin.IPlugin>}).

C{connect} connects to the first entry of the instance's port map in the
order tcp, np, via (the one plain SQL drivers use first) and closes the
connection at once: what HAProxy's default check and keepalived's
C{TCP_CHECK} do.  C{tcp}, the default, finds the same answer for a tcp
entry at an address of the node's own host in the kernel's table of
listening sockets (L{srp.server.listening}), one read for every instance,
and connects everywhere else.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.interfaces import IHealthCheck
from srp.plugins import namedOrRaise, names
from srp.records import InstanceInfo
from srp.server.listening import Found, ListeningSockets
from srp.transports import endpointsFor

#: The order in which a connect check picks the port-map entry it checks.
CHECKED_TRANSPORTS = ("tcp", "np", "via")


@implementer(IPlugin, IHealthCheck)
class NoCheck:
    """Every instance is alive: C{check = "none"}."""

    name = "none"

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None]:
        return succeed(None)


@implementer(IPlugin, IHealthCheck)
class ConnectCheck:
    """An instance is alive if its first port-map entry accepts a connection."""

    name = "connect"

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None]:
        endpoints = endpointsFor(reactor, host, info, CHECKED_TRANSPORTS, timeout)
        first = next(endpoints, None)
        if first is None:
            failed: Deferred[None] = Deferred()
            failed.errback(ConnectError(string="the instance has no tcp, np or via entry"))
            return failed
        _, endpoint = first
        connected = endpoint.connect(Factory.forProtocol(Protocol))
        timer = reactor.callLater(timeout, connected.cancel)

        def close(protocol: IProtocol) -> None:
            if timer.active():
                timer.cancel()
            protocol.transport.abortConnection()  # type: ignore[attr-defined]

        def timedOut(reason: Failure) -> Failure:
            if timer.active():
                timer.cancel()
            if reason.check(CancelledError):
                return Failure(ConnectError(string=f"no connection within {timeout} s"))
            return reason

        return connected.addCallbacks(close, timedOut)


@implementer(IPlugin, IHealthCheck)
class TcpCheck:
    """
    An instance is alive if its first port-map entry would accept a
    connection: for a tcp entry at an address of this host, if the kernel
    lists a socket listening on that address (or a wildcard) and port with
    room in its accept queue; otherwise as L{ConnectCheck} finds by
    connecting.
    """

    name = "tcp"

    def __init__(self, sockets: ListeningSockets | None = None,
                 connect: IHealthCheck | None = None) -> None:
        self.sockets = ListeningSockets() if sockets is None else sockets
        self.connect = ConnectCheck() if connect is None else connect

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None] | None:
        if info.tcp is not None:
            table = self.sockets.current(reactor)
            found = None if table is None else table.find(host, info.tcp)
            if found is Found.LISTENING:
                return None
            if found is not None:
                raise ConnectError(string=f"{host}:{info.tcp}: {found.value} (the kernel's "
                                   "table of listening sockets)")
        return self.connect.check(reactor, host, info, timeout)


#: srp's own checks.
BUILT_IN_CHECKS: tuple[IHealthCheck, ...] = (NoCheck(), TcpCheck(), ConnectCheck())


def checkNames() -> list[str]:
    """The names C{check = "NAME"} may give: srp's own, then the plugins'."""
    return names(IHealthCheck, BUILT_IN_CHECKS)


def checkNamed(name: str) -> IHealthCheck:
    """
    The health check called C{name}: srp's own, else a plugin's.

    @raise ValueError: naming the known ones, if there is none of that name.
    """
    found: IHealthCheck = namedOrRaise(IHealthCheck, "check", name, BUILT_IN_CHECKS)
    return found
