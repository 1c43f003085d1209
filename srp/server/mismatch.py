"""
Making a misconfigured cluster loud: another cluster key, or another name.

A cluster message rejected because its tag does not verify (the sender has
another key) or because it names another cluster (same key, other name) is
logged, one line per reason at most every L{REPORT_EVERY} seconds, naming
the sender.  An active answers a Probe it cannot authenticate, at most
once an interval, with an empty KeepAliveAck under its own key and name:
the prober rejects that answer in turn, and so learns who holds the
cluster port it cannot bind.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.authenticator import Rejected
from srp.server.roles.base import Address
from srp.wire.cluster import NO_LIST_VERSION, KeepAliveAck, Probe

if TYPE_CHECKING:
    from srp.server.membership import Membership

#: Seconds between two log lines for one reason.
REPORT_EVERY = 60.0
#: What each rejection reason most likely means.
HINTS = {"tag": "wrong cluster key?", "cluster": "another cluster name?"}
#: What holds the cluster port, by the reason its answers were rejected for.
HOLDERS = {"tag": "an srp node with another cluster key",
           "cluster": "an srp node of another cluster name"}


class MismatchReport:
    """Reports the cluster messages of nodes configured with another key or cluster name."""

    log = Logger()

    def __init__(self, core: Membership) -> None:
        self.core = core
        #: Rejections since the last line, by reason.
        self.unreported: Counter[str] = Counter()
        self._reportedAt: dict[str, float] = {}
        self._answeredAt = float("-inf")
        #: Cluster port addresses that answered under another key or name:
        #: the reason and when.
        self._holders: dict[Address, tuple[str, float]] = {}

    def rejected(self, error: Rejected, datagram: bytes, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """A message from C{source} was rejected: report it if it shows a misconfiguration."""
        hint = HINTS.get(error.reason)
        if hint is None:
            self.log.debug("Rejected a cluster message from {host}:{port}: {error}",
                           host=source[0], port=source[1], error=str(error))
            return
        core = self.core
        now = core.reactor.seconds()
        if source[1] == core.settings.port:
            self._holders[source] = (error.reason, now)
        self.unreported[error.reason] += 1
        if now - self._reportedAt.get(error.reason, float("-inf")) >= REPORT_EVERY:
            self._reportedAt[error.reason] = now
            self.log.warn("Rejected a cluster message from {host}:{port}: {error}: {hint} "
                          "({count} rejected for this since the last such line)",
                          host=source[0], port=source[1], error=str(error), hint=hint,
                          reason=error.reason, count=self.unreported.pop(error.reason))
        if datagram[:1] == bytes([Probe.opcode]) and replyFrom is not core.socket:
            self._answer(source, replyFrom, now)

    def _answer(self, source: Address, replyFrom: DatagramProtocol, now: float) -> None:
        core = self.core
        if now - self._answeredAt < core.settings.interval:
            return
        self._answeredAt = now
        core.counters["foreign_probes_answered"] += 1
        core.send(KeepAliveAck((), NO_LIST_VERSION), source, replyFrom)

    def holder(self) -> str | None:
        """
        Who holds the cluster port, when one of this node's listen addresses
        answered a probe lately under another key or cluster name.
        """
        core = self.core
        recent = core.reactor.seconds() - 4 * core.settings.interval
        for host in core.settings.listen:
            reason, seen = self._holders.get((host, core.settings.port), ("", recent - 1))
            if seen >= recent:
                return f"{HOLDERS[reason]} holds it ({host}:{core.settings.port} answered)"
        return None
