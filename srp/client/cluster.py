"""
Ask an srp node with the cluster (extension) messages: status, extended resolve.

Requests are sealed with the cluster key like any cluster message, so a node
answers only those who hold it (or, in a cluster without a key, loopback).
"""

from __future__ import annotations

import json
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
from srp.wire.cluster import ClusterMessage, Envelope, StatusQuery, StatusReply, clusterId
from srp.wire.mcsqlr import BROWSER_PORT


class _ClusterQuery(DatagramProtocol):
    noisy = False

    def __init__(self, auth: ClusterAuthenticator, request: ClusterMessage,
                 targets: Sequence[tuple[str, int]],
                 expected: type | tuple[type, ...]) -> None:
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
    reactor: Any, host: str, request: ClusterMessage, expected: type | tuple[type, ...],
    port: int = BROWSER_PORT, cluster: str | None = None, key: bytes = b"",
    timeout: float = 2.0, attempts: int = 3, addresses: Sequence[str] = (),
) -> Envelope:
    """
    Send a cluster C{request} to a node (or to every one of C{addresses} at
    once) and return the first authentic reply of type C{expected} (or of
    one of them).  Without a C{cluster} name, a Resolve or StatusQuery is
    answered by whichever cluster the node is in.

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


async def fetchStatus(
    reactor: Any, host: str, port: int = BROWSER_PORT, cluster: str | None = None,
    key: bytes = b"", timeout: float = 2.0, addresses: Sequence[str] = (),
) -> dict[str, Any]:
    """
    The status of the node at C{host} (or at one of C{addresses}): every
    page of it, put together as one document (without the page totals).

    @raise NoAnswer: if the first page did not come within C{timeout}.
    @raise QueryFailed: if a later one did not, or the pages do not fit together.
    """
    where = ", ".join(addresses) or host
    status: dict[str, Any] | None = None
    query = StatusQuery()
    while True:
        try:
            envelope = await clusterQuery(reactor, host, query, StatusReply, port, cluster,
                                          key, timeout, addresses=addresses)
        except NoAnswer as e:
            if status is None:
                raise
            raise QueryFailed(
                f"{e}: {where} answered the first {len(status['registrations'])} "
                f"registrations of its status, but not the page from "
                f"{query.registrations}; try again or raise --timeout") from None
        assert isinstance(envelope.message, StatusReply)
        try:
            page = json.loads(envelope.message.document)
            totals = (page.pop("passives_total", None), page.pop("registrations_total", None))
        except (ValueError, AttributeError):
            raise QueryFailed(f"{where} answered with a status that is not a JSON "
                              "object") from None
        if status is None:
            status = page
        elif page.get("node") != status["node"]:
            raise QueryFailed(f"another node answered at {where} while its status was "
                              "read (a takeover?); try again")
        else:
            status["passives"] += page["passives"]
            status["registrations"] += page["registrations"]
        if None in totals:
            return status  # a node that answers with its whole status at once
        have = (len(status["passives"]), len(status["registrations"]))
        if have[0] >= totals[0] and have[1] >= totals[1]:
            return status
        if not page["passives"] and not page["registrations"]:
            raise QueryFailed(f"{where} sent a status page with nothing in it")
        query = StatusQuery(*have)
