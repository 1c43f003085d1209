"""
The built-in instance health checks (L{IHealthCheck}): C{none}, C{tcp},
C{connect} and C{tds}; L{checkNamed} finds them, then plugins (a dropin providing
L{IHealthCheck} and L{IPlugin <twisted.plugin.IPlugin>}).

C{connect} connects to the first entry of the instance's port map in the
order tcp, np, via (the one plain SQL drivers use first) and closes the
connection at once: what HAProxy's default check and keepalived's
C{TCP_CHECK} do.  C{tcp}, the default, finds the same answer for a tcp
entry at an address of the node's own host in the kernel's table of
listening sockets (L{srp.server.listening}), one read for every instance,
and connects everywhere else.  C{tds} sends an MS-TDS PRELOGIN and expects
a PRELOGIN answer: a server that accepts connections but does not answer
(stopped, hung) is down to it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectError, ConnectingCancelledError
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
from srp.transports.prelogin import prelogin
from srp.wire.tds import INSTOPT

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

        def close(protocol: IProtocol) -> None:
            protocol.transport.abortConnection()  # type: ignore[attr-defined]

        return withDeadline(reactor, endpoint.connect(Factory.forProtocol(Protocol)), timeout,
                            "no connection").addCallback(close)


@implementer(IPlugin, IHealthCheck)
class TDSCheck:
    """
    An instance is alive if its first port-map entry answers an MS-TDS
    PRELOGIN naming it with a PRELOGIN answer that does not refuse the name
    (C{check = "tds"}): the server is up and reading, not only listening.
    """

    name = "tds"

    def check(self, reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None]:
        return withDeadline(reactor, Deferred.fromCoroutine(
            self._check(reactor, host, info, timeout)), timeout, "no PRELOGIN answer")

    async def _check(self, reactor: Any, host: str, info: InstanceInfo,
                     timeout: float) -> None:
        first = next(endpointsFor(reactor, host, info, CHECKED_TRANSPORTS, timeout), None)
        if first is None:
            raise ConnectError(string="the instance has no tcp, np or via entry")
        answer = await prelogin(reactor, first[1], info.instanceName, timeout)
        if answer.get(INSTOPT) not in (b"\x00", None):
            raise ConnectError(string=f"the server there is not instance {info.instanceName} "
                               "(PRELOGIN INSTOPT refused)")


def withDeadline(reactor: Any, checking: Deferred[Any], timeout: float,
                 what: str) -> Deferred[Any]:
    """
    C{checking}, cancelled after C{timeout} seconds, when it fails with a
    L{ConnectError} saying C{what} came within them.
    """
    timer = reactor.callLater(timeout, checking.cancel)

    def done(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if isinstance(result, Failure) and result.check(CancelledError,
                                                        ConnectingCancelledError):
            return Failure(ConnectError(string=f"{what} within {timeout:g} s"))
        return result

    return checking.addBoth(done)


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
BUILT_IN_CHECKS: tuple[IHealthCheck, ...] = (NoCheck(), TcpCheck(), ConnectCheck(), TDSCheck())


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
