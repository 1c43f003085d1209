"""
Splicing: join an accepted connection to one this side opens, bytes both ways.

What a relay (a node serving an instance that listens elsewhere) and a
fail-over proxy do.  Unlike L{twisted.protocols.portforward}, bytes that the
client sends before the backend connection is up (every TDS client speaks
first: PRELOGIN) are held, up to L{MAX_HELD} bytes, and delivered in order
once it is; a backend that cannot be reached closes the client's connection
with a log line.

A server that closes its connection is going or gone; a client that
leaves while the backend owes it an answer (its last bytes went up and
nothing came back) is taken at its word: its server went silent, which is
how a driver's timeout looks from here.  In both cases, when the backend
endpoint provides L{IFailoverEndpoint}, that connection's place is
suspected, so the next connection goes elsewhere at once.  A client that leaves
while its backend connection is still being made does not cancel it (up to
L{MAX_ORPHANS} at once): the attempt ends by itself, so a place that
verifies too slowly for the client is marked as failed all the same.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.interfaces import IFailoverEndpoint

#: Bytes a client may send before the backend connection is up.
MAX_HELD = 256 * 1024
#: Backend attempts left to finish after their client left; more are cancelled.
MAX_ORPHANS = 64


@define
class SpliceStats:
    """Counters of a splicing listener."""

    #: Client connections accepted.
    accepted: int = 0
    #: Client connections whose backend connection came up.
    spliced: int = 0
    #: Client connections closed because the backend could not be reached.
    failed: int = 0
    #: Client connections closed for sending more than L{MAX_HELD} bytes early.
    overflowed: int = 0
    #: Client connections closed at once because C{maxConnections} were open.
    refused: int = 0
    #: Client connections closed because their server closed the backend connection.
    dropped: int = 0
    #: Client connections that left while the backend owed them an answer.
    abandoned: int = 0
    #: Backend attempts whose client left, still running.
    orphans: int = 0
    #: Client connections open now.
    open: int = 0
    #: Bytes carried from clients to backends, and back.
    bytesUp: int = 0
    bytesDown: int = 0


class _BackendSide(Protocol):
    """The connection to the backend: what arrives goes to the client."""

    def __init__(self, client: SplicedClient) -> None:
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        self.client.factory.stats.bytesDown += len(data)
        self.client.owed = False
        self.client.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.client.backendLost()


class SplicedClient(Protocol):
    """
    An accepted connection, spliced to a backend connection opened for it.
    """

    log = Logger()
    factory: SpliceFactory

    def __init__(self) -> None:
        self.backend: _BackendSide | None = None
        self._held: list[bytes] = []
        self._heldSize = 0
        self._connecting: Deferred[IProtocol] | None = None
        self._endpoint: IStreamClientEndpoint | None = None
        self._starting: IDelayedCall | None = None
        self._closed = False
        self._orphan = False
        #: Whether the client's last bytes went to the backend and no answer came yet.
        self.owed = False

    def connectionMade(self) -> None:
        self.factory.stats.accepted += 1
        clock = self.factory.clock
        if clock is None:
            self._connect()
        else:
            self._starting = clock.callLater(0, self._connect)

    def _connect(self) -> None:
        self._starting = None
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self._endpoint = self.factory.backendFor(peer)
        backendFactory = Factory.forProtocol(lambda: _BackendSide(self))
        backendFactory.noisy = False  # a line per connection would drown the log
        self._connecting = self._endpoint.connect(backendFactory)
        self._connecting.addCallbacks(self._backendUp, self._backendFailed)

    def dataReceived(self, data: bytes) -> None:
        self.owed = True
        if self.backend is not None:
            self.factory.stats.bytesUp += len(data)
            self.backend.transport.write(data)  # type: ignore[union-attr]
            return
        self._heldSize += len(data)
        if self._heldSize > MAX_HELD:
            self.factory.stats.overflowed += 1
            self.log.warn("{name}: a client sent {size} bytes before the backend connection "
                          "was up (at most {limit} are held); closed it",
                          name=self.factory.name, size=self._heldSize, limit=MAX_HELD)
            self._held = []
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._held.append(data)

    def _backendUp(self, backend: IProtocol) -> None:
        self._connecting = None
        assert isinstance(backend, _BackendSide)
        if self._closed:
            self._ended()
            backend.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.backend = backend
        self.factory.stats.spliced += 1
        held, self._held, self._heldSize = b"".join(self._held), [], 0
        if held:
            self.factory.stats.bytesUp += len(held)
            backend.transport.write(held)  # type: ignore[union-attr]
        # Each side throttles the other: a slow reader pauses the fast writer.
        self.transport.registerProducer(backend.transport, True)  # type: ignore[union-attr]
        backend.transport.registerProducer(self.transport, True)  # type: ignore[union-attr]

    def _backendFailed(self, reason: Failure) -> None:
        self._connecting = None
        if self._closed:
            self._ended()
            return
        self.factory.stats.failed += 1
        self.log.warn("{name}: cannot reach the backend for {client}: {error}; closed the "
                      "client's connection", name=self.factory.name,
                      client=str(self.transport.getPeer()),  # type: ignore[union-attr]
                      error=reason.getErrorMessage())
        self.transport.loseConnection()  # type: ignore[union-attr]

    def backendLost(self) -> None:
        """
        The backend closed.  If its server closed it, the server is going or
        gone: suspect its place, and close the client's side once its writes
        are out.
        """
        backend, self.backend = self.backend, None
        if not self._closed:
            self.factory.stats.dropped += 1
            if backend is not None:
                self._suspectPlaceOf(backend)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        self._held = []
        stats = self.factory.stats
        stats.open -= 1
        if self._starting is not None:
            self._starting.cancel()
            self._starting = None
        elif self._connecting is not None:
            if stats.orphans < MAX_ORPHANS:
                self._orphan = True
                stats.orphans += 1
            else:
                self._connecting.cancel()
        elif self.backend is not None:
            if self.owed:
                self._abandoned(self.backend)
            self.backend.transport.loseConnection()  # type: ignore[union-attr]

    def _ended(self) -> None:
        """The backend attempt of a client that left ended."""
        if self._orphan:
            self._orphan = False
            self.factory.stats.orphans -= 1

    def _suspectPlaceOf(self, backend: _BackendSide) -> None:
        """Tell the endpoint, if it can use it, that C{backend}'s place failed."""
        failover = IFailoverEndpoint(self._endpoint, None)
        if failover is not None and backend.transport is not None:
            failover.suspect(backend.transport)

    def _abandoned(self, backend: _BackendSide) -> None:
        """The client left unanswered: its backend's place is suspected."""
        self.factory.stats.abandoned += 1
        self._suspectPlaceOf(backend)
        self.log.info("{name}: {client} left while the server owed it an answer; its place "
                      "is tried after the others for a while", name=self.factory.name,
                      client=str(self.transport.getPeer()))  # type: ignore[union-attr]


class SpliceFactory(ServerFactory[SplicedClient]):
    """
    Accepts connections and splices each to a backend connection made
    through the endpoint that C{backendFor} returns for the client's address.

    @param maxConnections: client connections open at once; more are closed
        as they are accepted (L{None}: no bound).
    @param clock: if given, each backend connection starts on the clock's
        next turn rather than at once, so that what the same turn reported
        first counts: a client that reconnects at once after leaving
        unanswered has its new connection accepted in the turn that also
        reports the old one lost, in either order.
    """

    noisy = False
    log = Logger()

    def __init__(self, backendFor: Callable[[IAddress], IStreamClientEndpoint],
                 name: str = "relay", maxConnections: int | None = None,
                 clock: IReactorTime | None = None) -> None:
        self.backendFor = backendFor
        self.clock = clock
        self.name = name
        self.maxConnections = maxConnections
        self.stats = SpliceStats()

    def buildProtocol(self, addr: IAddress | None) -> SplicedClient | None:
        if self.maxConnections is not None and self.stats.open >= self.maxConnections:
            if not self.stats.refused % 1000:
                # The first refusal, then every thousandth: a log line for
                # each would let a flood fill the disk.
                self.log.warn("{name}: {open} connections are open (at most {limit}); "
                              "refusing more ({refused} so far)", name=self.name,
                              open=self.stats.open, limit=self.maxConnections,
                              refused=self.stats.refused + 1)
            self.stats.refused += 1
            return None
        self.stats.open += 1
        client = SplicedClient()
        client.factory = self
        return client


def relayFactory(endpoint: IStreamClientEndpoint, name: str = "relay",
                 maxConnections: int | None = None,
                 clock: IReactorTime | None = None) -> SpliceFactory:
    """A L{SpliceFactory} that splices every connection to the one C{endpoint}."""
    return SpliceFactory(lambda peer: endpoint, name, maxConnections, clock)
