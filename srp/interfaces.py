"""The seams of srp, as zope.interface interfaces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from zope.interface import Attribute, Interface

from srp.records import Registration
from srp.wire.cluster import Envelope


class IRegistry(Interface):
    """The instances a responder answers for, and the nodes that registered them."""

    generation = Attribute(
        "An int that changes whenever the registry's contents change, so that "
        "replies built from it can be cached."
    )

    def lookup(name: str) -> Registration | None:
        """The best registration of the instance C{name} (any case), or L{None}."""

    def candidates(name: str) -> Sequence[Registration]:
        """Every registration of the instance C{name}, best first."""

    def visible() -> Sequence[Registration]:
        """The best registration of every instance whose best is not hidden, by name."""

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


class IResolver(Interface):
    """Resolves C{cluster/instance} names to the places an instance can be reached."""

    def resolve(cluster: str, instance: str, addresses: Sequence[str] = ()) -> Deferred[Any]:
        """
        The L{srp.client.resolver.Resolution} of C{instance} on C{cluster}, from the
        cache when it holds one.

        @param addresses: the cluster's addresses, if not those C{cluster} resolves to.
        """

    def purge(cluster: str, instance: str) -> None:
        """Forget the cached resolution of C{instance} on C{cluster}."""


class IInstanceVerifier(Interface):
    """
    Confirms that a connection reached the instance it was meant for (figure 3, step 315).
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


class IVIProvider(Interface):
    """
    A VI provider: what carries srp's C{via} connections.

    L{srp.transports.via.EmulatedVIProvider} emulates VI over TCP sockets; an
    RDMA provider would implement this interface with queue pairs instead.
    Either way the application's protocol sees message boundaries and
    credit-based flow control (L{srp.transports.via}).
    """

    name = Attribute("The provider's name in logs and messages, such as C{emulated}.")

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

    def registrations() -> Sequence[Registration]:
        """
        What C{srp status} lists: every registration the active answers for,
        the node's own in any other role.
        """
