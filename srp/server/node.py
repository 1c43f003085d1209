"""The node service: an [MC-SQLR] responder on every configured address."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import UDPServer
from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.logger import Logger

from srp.server.config import NodeConfig
from srp.server.registry import Registry
from srp.server.responder import ResolutionResponder, ResponderStats


class NodeStartError(Exception):
    """A node could not start; the message says why and what to do."""


class NodeService(MultiService):
    """
    An srp node: one registry, answered on UDP at every listen address.

    Use it from C{twistd -n srp}, C{srp serve}, or add it to the service
    hierarchy of any Twisted program.
    """

    log = Logger()

    def __init__(self, config: NodeConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.registry = Registry(config.instances)
        self.stats = ResponderStats()
        self._reactor: IReactorUDP = reactor
        clock: IReactorTime = reactor
        for address in config.listen:
            responder = ResolutionResponder(self.registry, clock, self.stats)
            server = UDPServer(config.port, responder, interface=address, reactor=reactor)
            server.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Bind every listen address.

        @raise NodeStartError: if one is in use or cannot be bound; the ones
            already bound are released.
        """
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            for server in self:
                port = getattr(server, "_port", None)
                if port is not None:
                    port.stopListening()
            reason = e.socketError.strerror if e.socketError else str(e)
            hint = ""
            if "in use" in str(reason):
                hint = " (is another srp node or SQL Server Browser running there?)"
            raise NodeStartError(
                f"cannot listen on {e.interface or '*'}:{e.port}/udp: {reason}{hint}"
            ) from None

    def startService(self) -> None:
        """Start answering, and say where."""
        super().startService()
        self.log.info(
            "srp node answering on {addresses} port {port} for {count} instances",
            addresses=", ".join(self.config.listen), port=self.config.port,
            count=len(self.registry),
        )
