"""A node without a cluster: it answers on its port and talks to no other node."""

from __future__ import annotations

from twisted.internet.protocol import DatagramProtocol

from srp.server.roles.active import ActiveRole
from srp.server.roles.base import Address
from srp.wire.cluster import Envelope, NotifyAck, Resolve, Subscribe


class StandaloneRole(ActiveRole):
    """
    Answer for the node's own instances, with no passives, no socket of its
    own and no offer of its port to other processes: of srp's extension
    messages only extended resolves, subscriptions (and status, which the
    core answers) get a reply.  Probes, Joins and KeepAlives from nodes that think it is
    their active are ignored, so none of them registers here.
    """

    name = "standalone"

    def begin(self) -> None:
        """Answer for the node's own registrations."""
        core = self.core
        core.epoch = 1
        for registration in core.own:
            core.registry.register(registration)

    def received(self, envelope: Envelope, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """Answer extended resolves; ignore what only a cluster's active would take."""
        if isinstance(envelope.message, Resolve):
            self._resolve(envelope.message, source, replyFrom)
        elif isinstance(envelope.message, (Subscribe, NotifyAck)):
            self.core.subscriptions.received(envelope.message, source, replyFrom)
        else:
            self.core.counters["ignored_cluster"] += 1

    def tick(self) -> None:
        """Nothing: a standalone node has no passives to expire nor actives to look for."""

    def paused(self, gap: float) -> bool:
        """Nothing: no other node can have taken over."""
        return False
