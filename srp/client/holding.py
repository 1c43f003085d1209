"""
A connection made before anyone wants it: L{Held} keeps what arrives until
a protocol adopts the connection.

The C{srp:} endpoint races places with held connections, so that the
application's protocol is connected to the winner only; L{FailoverClient
<srp.client.failover.FailoverClient>} connects to an instance's new place
with one before a pushed move.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure


class Held(Protocol):
    """A connection that holds what arrives until L{handTo} gives it to a protocol."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.adopter: IProtocol | None = None
        #: Whether the connection is gone.
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        if self.adopter is not None:
            self.adopter.dataReceived(data)
        else:
            self.held.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = True
        if self.adopter is not None:
            self.adopter.connectionLost(reason)

    def handTo(self, protocol: IProtocol) -> None:
        """From now on C{protocol} is this connection's protocol."""
        assert self.transport is not None
        self.adopter = protocol
        protocol.makeConnection(self.transport)
        held, self.held = self.held, []
        for data in held:
            protocol.dataReceived(data)
