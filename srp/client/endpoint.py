"""
The C{srp:} client endpoint: connect to an instance by its C{cluster/instance} name.

    endpoint = clientFromString(reactor, "srp:db1/SALES")

resolves C{SALES} through the cluster C{db1}, connects over the preferred
transport the instance offers and verifies the server reached is C{SALES}.
When that place fails (or is another instance now), it tries every other
place the cached resolution lists at once, while a re-resolve runs beside
them; the first live, verified place wins (a better one still connecting
is waited for a moment: L{srp.client.race}), and the failed one is tried
last for a while.  It is an ordinary L{IStreamClientEndpoint}, so
C{ClientService} and everything else in Twisted work with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    ITransport,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from srp.client.etcdwatch import EtcdPlaces, WatchEtcd
from srp.client.holding import Held
from srp.client.race import CandidateRace, Place, placeOf
from srp.client.resolver import Candidate, ClusterResolver, Resolution, ResolveError
from srp.client.subscription import NodeSubscription, SubscribeTo
from srp.client.verifiers import NoVerifier, WrongInstance, verifierNamed
from srp.clusterkey import BadKey, loadKey
from srp.etcd.access import BadAccess, loadAccess
from srp.interfaces import (
    IFailoverEndpoint,
    IInstanceResolver,
    IInstanceVerifier,
    IMoveListener,
    IMovingEndpoint,
)
from srp.transports import DEFAULT_PREFERENCE, endpointsFor
from srp.transports.tcp import detectDeadPeers
from srp.wire import InstanceRequest, WireError
from srp.wire.mcsqlr import BROWSER_PORT

#: Seconds a place that failed is tried after the others.
SUSPECT_FOR = 5.0


class ResolutionError(ConnectError):
    """The instance could not be resolved, or none of its places could be reached."""


_resolvers: dict[tuple[int, int, str | None, bytes], ClusterResolver] = {}


def sharedResolver(reactor: Any, port: int = BROWSER_PORT, clusterName: str | None = None,
                   key: bytes = b"") -> ClusterResolver:
    """The resolver (and so the cache) that every C{srp:} endpoint of C{reactor} shares."""
    index = (id(reactor), port, clusterName, key)
    if index not in _resolvers:
        _resolvers[index] = ClusterResolver(reactor, port=port, clusterName=clusterName,
                                            key=key)
    return _resolvers[index]


@implementer(IStreamClientEndpoint, IFailoverEndpoint, IMovingEndpoint)
class SRPClientEndpoint:
    """
    Connects to the instance C{instance} of cluster C{cluster}, wherever it is.

    @param addresses: the cluster's addresses, if not those C{cluster} resolves to.
    @param prefer: transports in order of preference (default via, tcp, np).
    @param verifier: how to confirm the instance reached (default: none).
    @param timeout: seconds for each connection attempt.
    @param subscribe: how to subscribe to the instance's moves at the
        cluster's nodes, while a move listener (a L{FailoverClient
        <srp.client.failover.FailoverClient>}) listens; L{None}: not at all.
    @param etcd: how to watch the instance's moves in the cluster's etcd
        instead, while a move listener listens.
    """

    log = Logger()

    def __init__(self, reactor: Any, cluster: str, instance: str,
                 resolver: IInstanceResolver | None = None, addresses: Sequence[str] = (),
                 prefer: Sequence[str] = DEFAULT_PREFERENCE,
                 verifier: IInstanceVerifier | None = None, timeout: float = 2.0,
                 subscribe: SubscribeTo | None = None, etcd: WatchEtcd | None = None) -> None:
        InstanceRequest(instance)  # refuse a name that cannot travel, now
        self.reactor = reactor
        self.cluster = cluster
        self.instance = instance
        self.resolver = resolver if resolver is not None else sharedResolver(reactor)
        self.addresses = tuple(addresses)
        self.prefer = tuple(prefer)
        self.verifier = verifier if verifier is not None else NoVerifier()
        self.timeout = timeout
        #: Places that failed recently, and until when they are tried last.
        self.suspects: dict[tuple[str, int | None], float] = {}
        #: Where the last connection went: (transport, candidate).
        self.connectedTo: tuple[str, Candidate] | None = None
        #: Where each connection still open went, by its transport: (transport, candidate).
        self._placeOf: WeakKeyDictionary[ITransport, tuple[str, Candidate]] = \
            WeakKeyDictionary()
        self.subscribeTo = subscribe
        self.watchEtcd = etcd
        #: The subscription to (or watch of) the instance's moves, while listeners listen.
        self.subscription: NodeSubscription | EtcdPlaces | None = None
        #: The instance's places as the cluster last pushed them: resolves
        #: are answered from it while the subscription lasts.
        self.pushed: Resolution | None = None
        self._listeners: list[IMoveListener] = []
        #: The address the instance was last resolved at, where to subscribe.
        self._source: str | None = None

    @property
    def target(self) -> str:
        """C{cluster/instance}, for messages."""
        return f"{self.cluster}/{self.instance}"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Resolve, connect, verify; when the place fails, race the other places
        known while a re-resolve runs beside them.
        """
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        failures: list[str] = []
        resolution = await self._resolve()
        tried: set[Place] = set()
        best = resolution.candidates[0]
        if not self._isSuspect(best):
            tried.add(placeOf(best))
            protocol = await self._attempt(factory, best, failures)
            if protocol is not None:
                return self._keep(protocol)
        protocol = await self._race(factory, resolution, tried, failures)
        if protocol is not None:
            return self._keep(protocol)
        self._purge()
        if not failures:
            raise ResolutionError(string=f"{self.cluster}/{self.instance} offers none of the "
                                  f"transports {', '.join(self.prefer)} that this client can use")
        raise ResolutionError(string=f"no place of {self.cluster}/{self.instance} could be "
                              f"reached: {'; '.join(failures)}")

    async def _race(self, factory: IProtocolFactory, resolution: Resolution,
                    tried: set[Place], failures: list[str]) -> IProtocol | None:
        """
        Every other place known, at once, and those a re-resolve adds (when
        C{resolution} came from the cache); the places suspected dead last.
        Each connects held (L{Held}): C{factory}'s protocol is connected to
        the winner only.
        """
        known = list(resolution.candidates)
        resolving = [resolution.cached]

        def idle() -> None:
            if not resolving[0]:
                # Only suspects are left, if anything: try them, then give up.
                race.start(known)
                race.close()

        def fresh(result: Resolution | Failure) -> None:
            resolving[0] = False
            if isinstance(result, Resolution):
                self._believe(result)
                known[:0] = result.candidates
                race.start(c for c in result.candidates if not self._isSuspect(c))
            else:
                failures.append(result.getErrorMessage())
            if not race.running:
                idle()

        race = CandidateRace(
            lambda candidate: Deferred.fromCoroutine(self._attempt(
                Factory.forProtocol(Held), candidate, failures)), tried, idle, self.reactor)
        race.start(c for c in known if not self._isSuspect(c))
        if resolution.cached:
            self._purge()
            # Not cancelled when the race is won: its answer refreshes the cache.
            Deferred.fromCoroutine(self._resolve()).addBoth(fresh)
        elif not race.running:
            idle()
        held = await race.done
        if held is None:
            return None
        assert isinstance(held, Held) and held.transport is not None
        if held.lost:
            failures.append(f"{held.transport.getPeer()}: the connection closed as it was won")
            return None
        protocol = factory.buildProtocol(held.transport.getPeer())
        if protocol is None:
            raise ConnectError(string="the protocol factory built no protocol")
        held.handTo(protocol)
        return protocol

    def _keep(self, protocol: IProtocol) -> IProtocol:
        """C{protocol}'s connection is the one made: remember where it went."""
        transport = getattr(protocol, "transport", None)
        if transport is not None and transport in self._placeOf:
            self.connectedTo = self._placeOf[transport]
        return protocol

    async def _resolve(self) -> Resolution:
        if self.pushed is not None:
            return self.pushed
        try:
            resolution: Resolution = await self.resolver.resolve(self.cluster, self.instance,
                                                                 self.addresses)
        except ResolveError as e:
            raise ResolutionError(string=f"cannot resolve {self.cluster}/{self.instance}: "
                                  f"{e}") from None
        if resolution.extended:
            self._source = resolution.source
            self._subscribe()
        return resolution

    def _purge(self) -> None:
        """Forget what is known of the instance's places: the next resolve asks the cluster."""
        self.pushed = None
        self.resolver.purge(self.cluster, self.instance)

    def addMoveListener(self, listener: IMoveListener) -> None:
        """Tell C{listener} of every move from now on."""
        self._listeners.append(listener)
        self._subscribe()

    def removeMoveListener(self, listener: IMoveListener) -> None:
        """Stop telling C{listener}; with no listener left, unsubscribe."""
        if listener in self._listeners:
            self._listeners.remove(listener)
        if not self._listeners and self.subscription is not None:
            self.subscription.stop()
            self.subscription = None
            self.pushed = None

    def _subscribe(self) -> None:
        """Subscribe (or move the subscription) to the cluster's nodes, or watch etcd, if asked."""
        if not self._listeners:
            return
        if self.watchEtcd is not None:
            if self.subscription is None:
                self.subscription = EtcdPlaces(self.reactor, self.watchEtcd, self.instance,
                                               self._notified)
                self.subscription.start()
            return
        if self.subscribeTo is None or self._source is None:
            return
        # The cluster's addresses, as a resolve asks them all (the active
        # answers), else the one the instance was resolved at.
        hosts = self.addresses or (self._source,)
        if self.subscription is None:
            self.subscription = NodeSubscription(self.reactor, self.subscribeTo, self.instance,
                                                 self._notified)
            self.subscription.start(hosts)
        elif isinstance(self.subscription, NodeSubscription):
            self.subscription.retarget(hosts)

    def _notified(self, candidates: tuple[Candidate, ...], source: str) -> None:
        """
        The cluster pushed the instance's places: answer from them, and tell
        the listeners if the best is not where the last connection went.
        """
        self.pushed = Resolution(self.cluster, self.instance, candidates, True, source,
                                 cached=True)
        best, connected = candidates[0], self.connectedTo
        if connected is None or best.down or placeOf(best) == placeOf(connected[1]):
            return
        self.log.info("{target} moved to {host} (pushed by {source})", target=self.target,
                      host=best.host, source=source)
        for listener in list(self._listeners):
            listener.instanceMoved()

    def suspect(self, transport: ITransport) -> None:
        """
        The place of the connection over C{transport} failed (it went silent,
        or the connection was lost): try it after the others, for a while.
        """
        place = self._placeOf.get(transport)
        if place is not None:
            self._suspect(place[1])

    def _suspect(self, candidate: Candidate) -> None:
        self.suspects[placeOf(candidate)] = self.reactor.seconds() + SUSPECT_FOR

    def _isSuspect(self, candidate: Candidate) -> bool:
        return bool(self.suspects.get(placeOf(candidate), 0.0) > self.reactor.seconds())

    def _believe(self, resolution: Resolution) -> None:
        """A suspect the cluster says is down stays suspect until it says otherwise."""
        for candidate in resolution.candidates:
            if candidate.down and self._isSuspect(candidate):
                self._suspect(candidate)

    async def _attempt(self, factory: IProtocolFactory, candidate: Candidate,
                       failures: list[str]) -> IProtocol | None:
        """Connect to C{candidate} over each transport it offers, in order of preference."""
        for transport, endpoint in endpointsFor(self.reactor, candidate.host, candidate.info,
                                                self.prefer, self.timeout):
            try:
                protocol: IProtocol = await self.verifier.connect(endpoint, factory,
                                                                  self.instance)
            except (CancelledError, ConnectingCancelledError):
                # Another place won the race.
                raise CancelledError() from None
            except WrongInstance as e:
                # Another instance answers there now: the resolution is stale.
                self._purge()
                failures.append(f"{transport} {candidate.host}: {e}")
            except (ConnectError, OSError) as e:
                failures.append(f"{transport} {candidate.host}: {e}")
            else:
                transportOf = getattr(protocol, "transport", None)
                if transportOf is not None:
                    detectDeadPeers(transportOf)
                    self._placeOf[transportOf] = (transport, candidate)
                self.suspects.pop(placeOf(candidate), None)
                return protocol
            self._suspect(candidate)
        return None


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SRPClientParser:
    """
    Parses C{srp:CLUSTER/INSTANCE[:option=value...]} into an L{SRPClientEndpoint}.

    Options: C{port} (the cluster's UDP port, 1434), C{timeout} (seconds per
    attempt, 2), C{addresses} (comma-separated cluster addresses),
    C{prefer} (comma-separated transports, C{via,tcp,np}), C{verify}
    (C{none}, C{tds} or C{hello}), C{cluster} (the cluster name for the
    extended resolve; not needed: without it, whichever cluster answers),
    C{key_file}, C{subscribe} (C{yes}: the cluster's active pushes the
    instance's moves to the L{FailoverClient
    <srp.client.failover.FailoverClient>} connected through the endpoint;
    C{no} by default) and C{etcd} (comma-separated URLs of the etcd of a
    cluster on etcd, whose prefix is watched for the moves instead; the
    cluster's name is C{cluster}, else C{CLUSTER}; with C{etcd_user} and
    C{etcd_password_file} if etcd's authentication is on, and for
    C{https://} URLs C{etcd_ca}, C{etcd_cert} and C{etcd_key}: the files of
    the CA that signed etcd's certificates, and of a client certificate and
    its key).  Escape the colons of an IPv6 address: C{srp:\\:\\:1/SALES}.
    """

    prefix = "srp"
    _OPTIONS = {"port", "timeout", "addresses", "prefer", "verify", "cluster", "key_file",
                "subscribe", "etcd", "etcd_user", "etcd_password_file", "etcd_ca",
                "etcd_cert", "etcd_key"}

    def parseStreamClient(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamClientEndpoint:
        if len(args) != 1 or "/" not in str(args[0]):
            given = ":".join(map(str, args))
            raise ValueError(f"srp endpoint needs CLUSTER/INSTANCE, not {given!r}")
        cluster, _, instance = str(args[0]).rpartition("/")
        options = {k: str(v) for k, v in kwargs.items()}
        unknown = set(options) - self._OPTIONS
        if unknown:
            raise ValueError(f"srp endpoint has no option {sorted(unknown)[0]!r}; known: "
                             f"{', '.join(sorted(self._OPTIONS))}")
        key = b""
        if "key_file" in options:
            try:
                key = loadKey(options["key_file"])
            except BadKey as e:
                raise ValueError(f"srp endpoint: {e}") from None
        subscribe = options.get("subscribe", "no")
        if subscribe not in ("yes", "no"):
            raise ValueError(f"srp endpoint: subscribe is yes or no, not {subscribe!r}")
        etcd = self._watchEtcd(options, cluster.strip("[]"))
        if etcd is not None and subscribe == "yes":
            raise ValueError("srp endpoint: subscribe=yes or etcd=, not both")
        try:
            port = int(options.get("port", BROWSER_PORT))
            timeout = float(options.get("timeout", 2.0))
            resolver = sharedResolver(reactor, port, options.get("cluster"), key)
            return SRPClientEndpoint(
                reactor, cluster.strip("[]"), instance, resolver,
                addresses=[a for a in options.get("addresses", "").split(",") if a],
                prefer=options.get("prefer", ",".join(DEFAULT_PREFERENCE)).split(","),
                verifier=verifierNamed(options.get("verify", "none"), reactor),
                timeout=timeout,
                subscribe=SubscribeTo(port, options.get("cluster"), key)
                if subscribe == "yes" else None, etcd=etcd)
        except WireError as e:
            raise ValueError(f"srp endpoint: {e}") from None

    def _watchEtcd(self, options: dict[str, str], cluster: str) -> WatchEtcd | None:
        """The C{etcd=} option's watch, if given."""
        if "etcd" not in options:
            return None
        endpoints = tuple(e for e in options["etcd"].split(",") if e)
        if not endpoints or not all(e.startswith(("http://", "https://")) for e in endpoints):
            raise ValueError(f"srp endpoint: etcd is a list of http:// or https:// URLs, "
                             f"not {options['etcd']!r}")
        user = options.get("etcd_user")
        try:
            password, tls = loadAccess(endpoints, user, options)
        except BadAccess as e:
            raise ValueError(f"srp endpoint: {e}") from None
        return WatchEtcd(endpoints, options.get("cluster") or cluster, user, password,
                         tls=tls)
