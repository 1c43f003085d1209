"""
Ask an srp node with the cluster (extension) messages: status, extended resolve.

Requests are sealed with the cluster key like any cluster message, so a node
answers only those who hold it (or, in a cluster without a key, loopback).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from srp.authenticator import ClusterAuthenticator, Rejected, randomNodeId
from srp.client.browser import (
    NoAnswer,
    QueryFailed,
    hostAddress,
    repeatUntilDone,
)
from srp.wire.cluster import ClusterMessage, Envelope, clusterId
from srp.wire.mcsqlr import BROWSER_PORT


class _ClusterQuery(DatagramProtocol):
    noisy = False

    def __init__(self, auth: ClusterAuthenticator, request: ClusterMessage,
                 targets: Sequence[tuple[str, int]], expected: type) -> None:
        self.auth = auth
        self.request = request
        self.targets = targets
        self.expected = expected
        self.done: Deferred[None] = Deferred()
        self.envelope: Envelope | None = None
        self.error: Exception | None = None

    def send(self) -> None:
        datagram = self.auth.seal(self.request, 0)
        for target in self.targets:
            try:
                self.transport.write(datagram, target)  # type: ignore[union-attr]
            except OSError as e:
                self.error = e

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            envelope = self.auth.open(datagram, addr[0])
        except Rejected as e:
            self.error = e
            return
        if isinstance(envelope.message, self.expected):
            self.envelope = envelope
            self.finish()

    def finish(self) -> None:
        if not self.done.called:
            self.done.callback(None)


async def clusterQuery(
    reactor: Any, host: str, request: ClusterMessage, expected: type,
    port: int = BROWSER_PORT, cluster: str = "srp", key: bytes = b"",
    timeout: float = 2.0, attempts: int = 3, addresses: Sequence[str] = (),
) -> Envelope:
    """
    Send a cluster C{request} to a node (or to every one of C{addresses} at
    once) and return the first authentic reply of type C{expected}.

    @raise NoAnswer: if none came within C{timeout} (the reason for the
        last rejected reply, such as a wrong key, is part of the message).
    """
    hosts = list(addresses) or [await hostAddress(reactor, host)]
    auth = ClusterAuthenticator(reactor, clusterId(cluster), randomNodeId(), key)
    query = _ClusterQuery(auth, request, [(h, port) for h in hosts], expected)
    await repeatUntilDone(reactor, query, hosts, timeout, attempts)
    envelope = query.envelope
    if envelope is None:
        if isinstance(query.error, OSError):
            raise QueryFailed(f"cannot send to {host} port {port}: {query.error.strerror}")
        why = f" (a reply was rejected: {query.error})" if query.error else ""
        raise NoAnswer(f"no answer from {', '.join(addresses) or host} port {port} within "
                       f"{timeout:g} s{why}")
    return envelope
