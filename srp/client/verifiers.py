"""
Instance verifiers: is the server we reached the instance we asked for?

C{none} trusts the resolution; C{tds} asks the server with an MS-TDS
PRELOGIN carrying INSTOPT, on a probe connection of its own, as SQL Server
itself confirms names; C{hello} asks srp's listener wrapper
(L{srp.server.hello}) in-band, invisibly to the application.  A plugin may
add others (L{verifierNamed}).
"""

from __future__ import annotations

from typing import Any, Self

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import ClientFactory
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.interfaces import IInstanceVerifier
from srp.plugins import namedOrRaise
from srp.transports.prelogin import Exchange, prelogin
from srp.wire.errors import WireError
from srp.wire.hello import HELLO_NO, HELLO_YES, helloRequest
from srp.wire.tds import INSTOPT


class WrongInstance(ConnectError):
    """The server reached is not the instance asked for: the resolution is stale."""


@implementer(IPlugin, IInstanceVerifier)
class NoVerifier:
    """Trusts the resolution: connects and asks nothing."""

    name = "none"

    def forReactor(self, reactor: Any) -> NoVerifier:
        """This verifier: it keeps no deadlines."""
        return self

    def connect(self, endpoint: Any, factory: IProtocolFactory,
                instance: str) -> Deferred[IProtocol]:
        result: Deferred[IProtocol] = endpoint.connect(factory)
        return result


class _TimedVerifier:
    """
    A verifier that waits at most C{timeout} seconds for the answer, on
    C{reactor} (the global reactor if L{None}).
    """

    defaultTimeout = 1.0

    def __init__(self, reactor: Any = None, timeout: float | None = None) -> None:
        self._reactor = reactor
        self.timeout = self.defaultTimeout if timeout is None else timeout

    @property
    def reactor(self) -> Any:
        """The reactor that times the answer."""
        if self._reactor is None:
            from twisted.internet import reactor

            return reactor
        return self._reactor

    def forReactor(self, reactor: Any) -> Self:
        """This verifier on C{reactor}, with the same timeout."""
        return type(self)(reactor, self.timeout)


@implementer(IPlugin, IInstanceVerifier)
class TDSVerifier(_TimedVerifier):
    """
    Confirms the instance with a PRELOGIN (INSTOPT) on a probe connection,
    then connects the application: TDS allows one PRELOGIN per connection.
    """

    name = "tds"
    defaultTimeout = 1.0

    async def _connect(self, endpoint: Any, factory: IProtocolFactory,
                       instance: str) -> IProtocol:
        answer = await prelogin(self.reactor, endpoint, instance, self.timeout, WrongInstance)
        valid = answer.get(INSTOPT)
        if valid not in (b"\x00", None):
            raise WrongInstance(string=f"the server there is not instance {instance} "
                                "(PRELOGIN INSTOPT refused)")
        protocol: IProtocol = await endpoint.connect(factory)
        return protocol

    def connect(self, endpoint: Any, factory: IProtocolFactory,
                instance: str) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(endpoint, factory, instance))


class _HelloClient(Exchange):
    """Asks the hello, then becomes a pass-through to the application's protocol."""

    def __init__(self, reactor: Any, instance: str, timeout: float,
                 factory: IProtocolFactory, addr: Any) -> None:
        super().__init__(reactor, helloRequest(instance), timeout, WrongInstance)
        self.factory = factory
        self.addr = addr
        self.app: IProtocol | None = None

    def complete(self) -> int | None:
        for answer in (HELLO_YES, HELLO_NO):
            if self.buffer.startswith(answer):
                return len(answer)
            if answer.startswith(self.buffer):
                return None
        raise WireError("the listener does not speak srp's hello")

    def dataReceived(self, data: bytes) -> None:
        if self.app is not None:
            self.app.dataReceived(data)
        else:
            super().dataReceived(data)

    def start(self, rest: bytes) -> IProtocol:
        """Verified: build the application's protocol and give it the connection."""
        app: IProtocol | None = self.factory.buildProtocol(self.addr)
        if app is None:
            raise ConnectError(string="the protocol factory built no protocol")
        self.app = app
        assert self.transport is not None
        app.makeConnection(self.transport)
        if rest:
            app.dataReceived(rest)
        return app

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.app is not None:
            self.app.connectionLost(reason)
        else:
            super().connectionLost(reason)


class _HelloClientFactory(ClientFactory):
    noisy = False

    def __init__(self, reactor: Any, instance: str, timeout: float,
                 factory: IProtocolFactory) -> None:
        self.reactor = reactor
        self.instance = instance
        self.timeout = timeout
        self.factory = factory

    def buildProtocol(self, addr: Any) -> _HelloClient:
        return _HelloClient(self.reactor, self.instance, self.timeout, self.factory, addr)


@implementer(IPlugin, IInstanceVerifier)
class HelloVerifier(_TimedVerifier):
    """Confirms the instance with srp's hello, answered by L{srp.server.hello.HelloFactory}."""

    name = "hello"
    defaultTimeout = 0.5

    async def _connect(self, endpoint: Any, factory: IProtocolFactory,
                       instance: str) -> IProtocol:
        client: _HelloClient = await endpoint.connect(
            _HelloClientFactory(self.reactor, instance, self.timeout, factory))
        try:
            answer = await client.answered
        except CancelledError:
            # Another place won a race: this one is not wanted.
            client.transport.abortConnection()  # type: ignore[union-attr]
            raise
        if answer == HELLO_NO:
            client.transport.loseConnection()  # type: ignore[union-attr]
            raise WrongInstance(string=f"the server there is not instance {instance}")
        rest, client.buffer = client.buffer, b""
        return client.start(rest)

    def connect(self, endpoint: Any, factory: IProtocolFactory,
                instance: str) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(endpoint, factory, instance))


_BUILTINS = (NoVerifier(), TDSVerifier(), HelloVerifier())


def verifierNamed(name: str, reactor: Any) -> IInstanceVerifier:
    """
    The verifier called C{name}, on C{reactor}: srp's own (C{none}, C{tds},
    C{hello}), else a plugin's.

    @raise ValueError: if there is none of that name.
    """
    found: IInstanceVerifier = namedOrRaise(IInstanceVerifier, "verifier", name, _BUILTINS)
    return found.forReactor(reactor)
