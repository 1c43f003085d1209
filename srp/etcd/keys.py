"""
Where an srp cluster's keys live in etcd: the layout nodes write
(L{srp.server.etcdlease}) and nodes and clients watch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from attrs import frozen

from srp.etcd.client import Event


@frozen
class ClusterKeys:
    """Where a cluster's keys live in etcd (the layout: L{srp.server.etcdlease})."""

    cluster: str

    @property
    def root(self) -> bytes:
        """The prefix of every key of the cluster."""
        return f"/srp/{self.cluster}/".encode()

    @property
    def leader(self) -> bytes:
        """The leader's key."""
        return self.root + b"leader"

    def node(self, nodeId: int) -> bytes:
        """The key of a node's addresses."""
        return self.root + f"nodes/{nodeId:016x}".encode()

    def registration(self, nodeId: int, instance: str) -> bytes:
        """The key of node C{nodeId}'s registration of C{instance} (an instance key)."""
        return self.root + f"registrations/{nodeId:016x}/{instance}".encode()

    def parse(self, key: bytes) -> tuple[str, int, str] | None:
        """
        C{("leader", 0, "")}, C{("node", NODE, "")} or C{("registration",
        NODE, INSTANCE)} for a key of this cluster; L{None} for any other.
        """
        if not key.startswith(self.root):
            return None
        parts = key[len(self.root):].decode("utf-8", "replace").split("/")
        try:
            if parts == ["leader"]:
                return "leader", 0, ""
            if len(parts) == 2 and parts[0] == "nodes":
                return "node", int(parts[1], 16), ""
            if len(parts) == 3 and parts[0] == "registrations" and parts[2]:
                return "registration", int(parts[1], 16), parts[2]
        except ValueError:
            pass
        return None

    def parsed(self, events: Iterable[Event]) -> Iterator[tuple[str, int, str, Event]]:
        """Each of C{events} on a key of this cluster, after what L{parse} says of its key."""
        for event in events:
            parsed = self.parse(event.kv.key)
            if parsed is not None:
                yield (*parsed, event)
