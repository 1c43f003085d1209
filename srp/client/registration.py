"""
Register an instance with a cluster by command, for a while (a lease), and
keep the lease until told to stop: what C{srp register} does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from srp.client.browser import QueryFailed
from srp.client.cluster import clusterQuery
from srp.records import Registration
from srp.wire.cluster import (
    FULL,
    REGISTERED,
    UNKNOWN,
    Redirect,
    Register,
    RegisterAck,
    Unregister,
)
from srp.wire.mcsqlr import BROWSER_PORT

#: What each result code of a RegisterAck means, for messages.
_RESULTS = {UNKNOWN: "not registered", FULL: "the cluster is full"}


class Refused(QueryFailed):
    """The active answered, and refused; the message says why."""


@frozen
class Cluster:
    """Where a cluster answers and how to speak to it."""

    host: str
    port: int = BROWSER_PORT
    #: The cluster's name; L{None}: whichever cluster the node is in.
    name: str | None = None
    key: bytes = b""
    timeout: float = 2.0
    addresses: tuple[str, ...] = ()


async def request(reactor: Any, cluster: Cluster, message: Register | Unregister
                  ) -> RegisterAck:
    """
    Send C{message} to the cluster's active (following a passive's Redirect
    to it) and return its acknowledgement.

    @raise NoAnswer: if none came in time (a wrong cluster key looks like this).
    @raise Refused: if the active refused.
    """
    where: tuple[str, Sequence[str], int] = (cluster.host, cluster.addresses, cluster.port)
    for _ in range(2):
        host, addresses, port = where
        envelope = await clusterQuery(reactor, host, message, (RegisterAck, Redirect), port,
                                      cluster.name, cluster.key, cluster.timeout,
                                      addresses=addresses)
        answer = envelope.message
        if isinstance(answer, Redirect):
            where = (answer.active.host, (), answer.active.port)
            continue
        assert isinstance(answer, RegisterAck)
        if answer.result != REGISTERED:
            raise Refused(f"refused: {answer.reason or _RESULTS.get(answer.result, 'refused')}")
        return answer
    raise QueryFailed(f"{cluster.host} redirected twice: no active to register with")


class LeaseKeeper:
    """
    Holds a lease: registers, renews every third of the lease, and
    unregisters when stopped.  A renewal that fails is logged and tried
    again at the next one; the lease lasts until its time is up.
    """

    log = Logger()

    def __init__(self, reactor: Any, cluster: Cluster, registration: Registration,
                 ttl: float) -> None:
        self.reactor = reactor
        self.cluster = cluster
        self.registration = registration
        self.ttl = ttl
        self.renewals = 0
        self.failures = 0
        self._renewing = LoopingCall(self._renew)
        self._renewing.clock = reactor

    def message(self) -> Register:
        """The Register this keeper sends."""
        # A lease shorter than a millisecond is one, not one without an end (0).
        return Register(self.registration, max(1, round(self.ttl * 1000)) if self.ttl else 0)

    async def start(self) -> RegisterAck:
        """Register, and renew every third of the lease from then on."""
        ack = await request(self.reactor, self.cluster, self.message())
        if self.ttl:
            self._renewing.start(self.ttl / 3, now=False)
        return ack

    def _renew(self) -> Deferred[None]:
        async def renew() -> None:
            try:
                await request(self.reactor, self.cluster, self.message())
            except QueryFailed as e:
                self.failures += 1
                self.log.warn("Could not renew the registration of {name}: {error}",
                              name=self.registration.name, error=e)
            else:
                self.renewals += 1
        return Deferred.fromCoroutine(renew())

    async def stop(self) -> None:
        """Stop renewing and unregister."""
        if self._renewing.running:
            self._renewing.stop()
        await request(self.reactor, self.cluster,
                      Unregister(self.registration.name, self.registration.priority))


__all__ = ["Cluster", "LeaseKeeper", "Refused", "request"]
