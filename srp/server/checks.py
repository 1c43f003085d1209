"""
The built-in instance health checks (L{IHealthCheck}): C{none} and C{tcp};
L{checkNamed} finds them, then plugins (a dropin providing L{IHealthCheck}
and L{IPlugin <twisted.plugin.IPlugin>}).

C{tcp} connects to the first entry of the instance's port map in the order
tcp, np, via (the one plain SQL drivers use first) and closes the
connection at once: what HAProxy's default check and keepalived's
C{TCP_CHECK} do.
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

    name = "tcp"

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



#: srp's own checks.
BUILT_IN_CHECKS: tuple[IHealthCheck, ...] = (NoCheck(), ConnectCheck())


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
