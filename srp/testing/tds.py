"""
A server that answers MS-TDS PRELOGIN as SQL Server does, for testing the
C{tds} verifier and real drivers.  As a program, it serves several
instances, each on its own port:

    python -m srp.testing.tds HOST NAME=PORT [NAME=PORT ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.internet.protocol import Protocol, ServerFactory

from srp.records import instanceKey
from srp.wire.errors import WireError
from srp.wire.tds import (
    PRELOGIN,
    decodePrelogin,
    packetLength,
    preloginResponse,
    requestedInstance,
)


class PreloginResponder(Protocol):
    """
    A server that answers one MS-TDS PRELOGIN as SQL Server does: INSTOPT 0x00
    when the client names C{instance} (or none), 0x01 otherwise.  For testing
    the C{tds} verifier without a SQL Server.
    """

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.buffer = b""
        self.asked: list[str] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        try:
            if len(self.buffer) < 8 or len(self.buffer) < packetLength(self.buffer):
                return
            asked = requestedInstance(decodePrelogin(self.buffer[:packetLength(self.buffer)],
                                                     PRELOGIN))
        except WireError:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.asked.append(asked)
        self.buffer = b""
        valid = asked == "" or instanceKey(asked) == instanceKey(self.instance)
        self.transport.write(preloginResponse(valid))  # type: ignore[union-attr]


def preloginServer(instance: str) -> ServerFactory:
    """A factory of L{PreloginResponder}s for C{instance}."""
    factory = ServerFactory()
    factory.protocol = lambda: PreloginResponder(instance)
    factory.noisy = False
    return factory


def main(argv: Sequence[str] | None = None) -> None:
    """Serve PRELOGIN for each C{NAME=PORT} at C{HOST}; print C{listening} once they all do."""
    from twisted.internet import reactor

    host, *pairs = sys.argv[1:] if argv is None else argv
    for pair in pairs:
        name, _, port = pair.partition("=")
        reactor.listenTCP(int(port), preloginServer(name), interface=host)
    print("listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
