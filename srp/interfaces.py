"""The seams of srp, as zope.interface interfaces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol
from zope.interface import Attribute, Interface

from srp.records import InstanceInfo, Registration
from srp.wire.cluster import Envelope


class IAnswers(Interface):
    """What a responder answers [MC-SQLR] requests from."""

    generation = Attribute(
        "An int that changes whenever the answers change, so that replies "
        "built from them can be cached."
    )

    def lookup(name: str) -> Registration | None:
        """
        The registration of the instance C{name} (any case) that clients are
        told about: the best live one; with none live, the best one unless it
        is hidden when down; L{None} if there is none.
        """

    def visible() -> Sequence[Registration]:
        """What L{lookup} answers for every instance, by name, leaving out hidden ones."""


class IRegistry(IAnswers):
    """The instances a cluster answers for, and the nodes that registered them."""

    def candidates(name: str) -> Sequence[Registration]:
        """Every registration of the instance C{name}, best first."""

    def registrations() -> Sequence[Registration]:
        """Every registration of every instance."""

    def countOf(nodeId: int) -> int:
        """How many registrations node C{nodeId} holds."""

    def register(registration: Registration) -> None:
        """Add C{registration}, replacing the same node's registration of that instance."""

    def unregister(name: str, nodeId: int) -> None:
        """Remove node C{nodeId}'s registration of the instance C{name}, if any."""

    def removeNode(nodeId: int) -> int:
        """Remove every registration of node C{nodeId}; return how many there were."""


class IClusterBackend(Interface):
    """
    How a clustered node shares its registrations and answers with the
    other nodes: srp's own UDP cluster (L{srp.server.membership.Membership})
    or etcd (L{srp.server.etcdmember.EtcdMembership}).  A clustered
    L{NodeService <srp.server.node.NodeService>} works through this alone.
    """

    nodeId = Attribute("This node's id, an int.")
    role = Attribute("The name of the role the node plays now, for status and logs.")
    own = Attribute("The node's own registrations, a tuple of L{Registration}.")
    ownByKey = Attribute("The node's own registrations by instance key.")
    healthSince = Attribute(
        "When the health of each of the node's own instances last changed "
        "(reactor seconds), by instance key; the node service keeps it up to date."
    )
    counters = Attribute("A C{collections.Counter} of what the node did, for status.")
    startedAt = Attribute("When the node started (reactor seconds), or L{None} before.")

    def setOwn(own: Sequence[Registration]) -> None:
        """The instances this node registers (before it starts)."""

    def updateOwn(own: Sequence[Registration]) -> None:
        """The node's own registrations changed (health, reload): tell the cluster at once."""

    def start() -> None:
        """Join the cluster and start answering as the node's role allows."""

    def stop() -> Deferred[None]:
        """Leave the cluster gracefully; fires when everything is released."""

    def status() -> dict[str, Any]:
        """What this node knows, for C{srp status}."""


class IInstanceResolver(Interface):
    """Resolves C{cluster/instance} names to the places an instance can be reached."""

    def resolve(cluster: str, instance: str, addresses: Sequence[str] = ()) -> Deferred[Any]:
        """
        The L{srp.client.resolver.Resolution} of C{instance} on C{cluster}, from the
        cache when it holds one.

        @param addresses: the cluster's addresses, if not those C{cluster} resolves to.
        """

    def purge(cluster: str, instance: str) -> None:
        """Forget the cached resolution of C{instance} on C{cluster}."""


class IFailoverEndpoint(Interface):
    """
    Optional, for a client endpoint that L{srp.client.failover.FailoverClient}
    connects through: what helps it fail over beyond reconnecting.

    L{srp.client.endpoint.SRPClientEndpoint} provides it; with any other
    L{IStreamClientEndpoint <twisted.internet.interfaces.IStreamClientEndpoint>}
    the client still reconnects, it only cannot say which place went silent.
    """

    target = Attribute("What the endpoint connects to, for messages: C{cluster/instance}.")

    def suspect(transport: ITransport) -> None:
        """
        The place of the connection over C{transport} (one this endpoint
        made) failed: it went silent, or the connection was lost.  Try it
        after the others, and not from the cache, for a while.
        """


class IMoveListener(Interface):
    """Told by an L{IMovingEndpoint} that the instance it connects to moved."""

    def instanceMoved() -> None:
        """
        The cluster pushed a change: the instance's best place is no longer
        the one the endpoint connected to last.  A connection there should
        move before it is needed.
        """


class IMovingEndpoint(Interface):
    """
    Optional, for a client endpoint that learns of its instance's moves as
    they happen (C{srp:...:subscribe=yes}): L{srp.client.failover.FailoverClient}
    listens, and moves its connection before the application writes.
    """

    def addMoveListener(listener: IMoveListener) -> None:
        """Tell C{listener} of every move from now on (the endpoint subscribes if it must)."""

    def removeMoveListener(listener: IMoveListener) -> None:
        """Stop telling C{listener} (with no listener left, the endpoint unsubscribes)."""


class IIdleAware(Interface):
    """
    Optional: a protocol that knows whether it awaits answers.  Bytes cannot
    tell (an answer to one request while the next is on its way looks like
    idleness), so L{srp.client.failover.FailoverClient} asks it before it
    moves the connection to a pushed new place: only an idle connection
    moves without losing a request.
    """

    def idle() -> bool:
        """Whether every request written has been answered."""


class IFailoverAware(Interface):
    """Optional: a protocol that wants to know when its connection failed over."""

    def failedOver(previous: IAddress | None, current: IAddress) -> None:
        """
        The connection now goes to C{current}, another place than C{previous}
        (a reconnection to the same place is not a fail-over).
        """


class IInstanceVerifier(Interface):
    """
    Confirms that a connection reached the instance it was meant for.

    srp's own (C{none}, C{tds}, C{hello}) are found first, then any plugin
    providing this interface (and L{IPlugin <twisted.plugin.IPlugin>}) in a
    C{twisted/plugins} dropin: C{verify=NAME} in an C{srp:} endpoint string
    names one.
    """

    name = Attribute("The verifier's name in endpoint strings: none, tds, hello.")

    def connect(endpoint: Any, factory: Any, instance: str) -> Deferred[Any]:
        """
        Connect C{factory}'s protocol through C{endpoint} once the server
        there is confirmed to be C{instance}.

        @return: a L{Deferred} firing with the connected protocol, or failing
            with L{srp.client.verifiers.WrongInstance} when the server is
            another instance (the resolution was stale).
        """

    def forReactor(reactor: Any) -> IInstanceVerifier:
        """
        This verifier, keeping its deadlines with C{reactor} (an
        L{IReactorTime <twisted.internet.interfaces.IReactorTime>}): a
        verifier found as a plugin is shared, the reactor is the endpoint's.
        One that keeps no deadlines may return itself.
        """


class IVIProvider(Interface):
    """
    A VI provider: what carries srp's C{via} connections.

    L{srp.transports.via.EmulatedVIProvider} emulates VI over TCP sockets; an
    RDMA provider would implement this interface with queue pairs instead.
    Either way the application's protocol sees message boundaries and
    credit-based flow control (L{srp.transports.via}).  srp's own is found
    first, then any plugin providing this interface (and L{IPlugin
    <twisted.plugin.IPlugin>}): C{provider=NAME} in a C{via:} endpoint string
    and C{vi_provider} in a node's configuration name one.
    """

    name = Attribute("The provider's name in endpoint strings, configurations and logs: "
                     "C{emulated}.")

    def connect(reactor: Any, paths: Sequence[tuple[str, int]], factory: Any,
                timeout: float) -> Deferred[Any]:
        """
        Connect C{factory}'s protocol through the first of C{paths} that answers.

        @param paths: (NIC address, port) pairs, tried in order; a path that
            refuses, times out or does not speak VIA falls over to the next.
        @param factory: an L{IProtocolFactory
            <twisted.internet.interfaces.IProtocolFactory>}.
        @param timeout: seconds each path may take to connect and accept.
        @return: a L{Deferred} firing with the connected L{IProtocol
            <twisted.internet.interfaces.IProtocol>}, or failing with a
            L{ConnectError <twisted.internet.error.ConnectError>} naming
            every path's failure.
        """

    def listen(reactor: Any, port: int, factory: Any, interface: str = "") -> Any:
        """
        Accept VIA connections on C{port} of the NIC whose address is
        C{interface} (every NIC if empty) for C{factory}'s protocols.

        @return: the L{IListeningPort
            <twisted.internet.interfaces.IListeningPort>}.
        @raise twisted.internet.error.CannotListenError: if the port is taken.
        """


@frozen
class NodeListening:
    """
    What a node tells a port-map transport when it listens for one of its instances.

    @ivar host: the address to listen on: the node's first listen address.
    @ivar nodeId: the node's id, for names that must differ between the
        nodes of one host (several may serve one instance).
    @ivar pipeDirectory: where pipe sockets go (L{None}: the default).
    @ivar viProvider: the name of the VI provider that carries via.
    """

    host: str
    nodeId: int = 0
    pipeDirectory: Path | None = None
    viProvider: str = "emulated"


class IPortMapTransport(Interface):
    """
    A protocol of an [MC-SQLR] port map: how a client reaches an instance
    through its entry, and how a node listens for one and fills it in.

    srp's own (C{tcp}, C{np}, C{via}) are found first, then any plugin
    providing this interface (and L{IPlugin <twisted.plugin.IPlugin>}) in a
    C{twisted/plugins} dropin.  A third party's entry travels in
    L{InstanceInfo.other <srp.records.InstanceInfo>}.
    """

    name = Attribute("The protocol's name in the port map, in C{prefer=} and in a "
                     "node's C{serve}: tcp, np, via.")

    def endpointFor(reactor: Any, host: str, info: InstanceInfo,
                    timeout: float) -> IStreamClientEndpoint | None:
        """
        A client endpoint to C{info}'s entry of this protocol, on C{host}
        (the address the instance was resolved at).

        @param timeout: seconds the connection attempt may take.
        @return: the endpoint, or L{None} if C{info} has no such entry.
        """

    def listen(reactor: Any, info: InstanceInfo, factory: IProtocolFactory,
               node: NodeListening) -> tuple[IListeningPort, InstanceInfo]:
        """
        Listen for C{factory}'s connections to the instance C{info}, where
        C{info}'s entry asks (anywhere free if it has none).

        @return: the listening port, and C{info} with its entry of this
            protocol saying what was bound, for the node to advertise.
        @raise twisted.internet.error.CannotListenError: if it cannot bind.
        @raise OSError: if it cannot prepare to (a directory, say).
        @raise ValueError: if C{info}'s entry cannot be listened on.
        """


class IHealthCheck(Interface):
    """
    Tells whether the server behind an instance's registration is alive
    (C{check = "NAME"} in a node's configuration).
    """

    name = Attribute("The check's name in the configuration: none, tcp, tds, ...")

    def check(reactor: Any, host: str, info: InstanceInfo,
              timeout: float) -> Deferred[None] | None:
        """
        Check the instance C{info} describes, at C{host}.

        @return: a L{Deferred} that fires with L{None} if the instance is
            alive, or fails (with a message saying why) if it is not or
            does not answer within C{timeout} seconds; or, for a check that
            knows at once, L{None} (alive) or an exception raised (not).
        """


class IClusterRole(Interface):
    """
    A role a node plays in its cluster: the state data of its role machine.

    Each role holds exactly its own state (a passive: the active it follows
    and its unanswered KeepAlives; the active: its cluster ports and its
    passives); what every role shares (the node's socket, timers, sending,
    authentication, epoch, counters) stays with the membership core.
    """

    name = Attribute(
        "What C{srp status}, role commands (C{SRP_ROLE}) and C{onRole} call this "
        "role: idle, probing, passive, waiting, binding, active, handing-over, "
        "stopped or crashed."
    )
    active = Attribute(
        "The active this role knows of, as a L{srp.wire.cluster.Member}, or L{None} "
        "(for the active itself, and before any active answered)."
    )
    passives = Attribute(
        "The passive list this role knows, in join order: a sequence of "
        "L{srp.wire.cluster.Member}."
    )

    def received(envelope: Envelope, source: tuple[str, int],
                 replyFrom: DatagramProtocol) -> None:
        """
        An authenticated cluster message arrived.

        @param source: the address it came from.
        @param replyFrom: the socket it came in on, which replies go out of.
        """

    def tick() -> None:
        """Do this role's periodic work (once a KeepAlive interval)."""

    def paused(gap: float) -> bool:
        """
        This node did not run for C{gap} seconds (stopped, or starved of
        CPU): find out whether it was replaced meanwhile.  Returns whether
        its answers to clients must be held back until then.
        """

    def ownChanged() -> None:
        """
        The node's own registrations changed (health, reload, registration):
        bring the cluster up to date at once.
        """

    def registrations() -> Sequence[Registration]:
        """
        What C{srp status} lists: every registration the active answers for,
        the node's own in any other role.
        """


@frozen
class HandedSocket:
    """
    A bound cluster socket passed from another process of the same host.

    @ivar fd: this process's descriptor of it (not yet adopted by a reactor).
    @ivar family: its address family (C{AF_INET} or C{AF_INET6}).
    @ivar host: the address it is bound to.
    @ivar port: the port it is bound to.
    """

    fd: int
    family: int
    host: str
    port: int


@frozen
class SocketOffer:
    """
    What a node of the same host handed over: its bound cluster sockets.

    @ivar member: the address of the offering node's own cluster socket (the
        one that is not shared), when it said.
    """

    sockets: tuple[HandedSocket, ...]
    member: tuple[str, int] | None = None


class ISocketSharing(Interface):
    """
    Passing bound cluster sockets between the nodes of one host: the
    graceful hand-over, and the duplicates passives hold to fence a hung
    active.  A process that holds a duplicate keeps the socket bound; the
    datagrams it receives go to whichever holder reads first.
    """

    def offer(name: str, ports: Sequence[IListeningPort],
              member: tuple[str, int] | None = None) -> IListeningPort:
        """
        Offer duplicates of the sockets of C{ports} under C{name}, to
        processes of this user on this host, until the returned port stops
        listening; C{member} is told to them as L{SocketOffer.member}.

        @raise twisted.internet.error.CannotListenError: if C{name} is taken.
        """

    def take(name: str, timeout: float) -> Deferred[SocketOffer]:
        """
        Take duplicates of the sockets offered under C{name}: a Deferred of
        the L{SocketOffer}, failing when nothing is offered there or nothing
        came within C{timeout} seconds.
        """

    def adopt(handed: HandedSocket, protocol: DatagramProtocol,
              maxPacketSize: int) -> IListeningPort:
        """Read C{handed} with C{protocol}; C{handed}'s descriptor is released."""

    def close(handed: HandedSocket) -> None:
        """Let go of a socket not adopted (it stays bound while others hold it)."""
