"""
Nodes with many registrations on one address of a L{FakeNetwork}, and every
cluster message they send: what the tests of Joins in parts and of status
pages drive.
"""

from __future__ import annotations

from collections.abc import Callable

from srp.authenticator import ClusterAuthenticator
from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.health import HealthSettings
from srp.server.limits import StateBounds
from srp.server.node import NodeService
from srp.testing import FakeNetwork
from srp.wire.cluster import ClusterMessage, ClusterWireError, Envelope, clusterId, decodeEnvelope
from tests.cluster_sim import INTERVAL, KEY, MISSES

HOST = "127.0.0.1"
CLUSTER = "big"


def instances(count: int, prefix: str = "I", port: int = 20000) -> tuple[Registration, ...]:
    return tuple(Registration(InstanceInfo(
        "SRPTEST", f"{prefix}{n}", version="16.0.1000.6", tcp=port + n % 40000,
        np=f"\\\\SRPTEST\\pipe\\MSSQL${prefix}{n}\\sql\\query")) for n in range(count))


class Cluster:
    """Nodes on one address of a fake network, and every datagram they send."""

    def __init__(self, **network: float) -> None:
        self.network = FakeNetwork(seed=3, **network)  # type: ignore[arg-type]
        self.drop: Callable[[Envelope], bool] = lambda envelope: False
        self.sent: list[Envelope] = []
        deliver = self.network.send

        def send(source: tuple[str, int], destination: tuple[str, int],
                 datagram: bytes) -> None:
            try:
                envelope = decodeEnvelope(datagram, KEY, clusterId(CLUSTER))
            except ClusterWireError:
                pass  # not a cluster message, or one made to be rejected
            else:
                self.sent.append(envelope)
                if self.drop(envelope):
                    return
            deliver(source, destination, datagram)

        self.network.send = send  # type: ignore[method-assign]

    def node(self, registrations: tuple[Registration, ...], nodeId: int,
             bounds: StateBounds | None = None) -> NodeService:
        config = NodeConfig(listen=(HOST,), port=1434, instances=registrations,
                            cluster=ClusterConfig(name=CLUSTER, addresses=(HOST,),
                                                  interval=INTERVAL, misses=MISSES, key=KEY),
                            bounds=bounds or StateBounds(),
                            # No server runs behind these instances.
                            health={r.key: HealthSettings(check="none") for r in registrations})
        service = NodeService(config, self.network.reactor(HOST), nodeId=nodeId)
        service.startService()
        return service

    def run(self, seconds: float, until: Callable[[], bool] = lambda: False) -> float:
        """Advance the clock up to C{seconds}, or until C{until}; the time it took."""
        clock = self.network.clock
        start = clock.seconds()
        while clock.seconds() - start < seconds and not until():
            clock.advance(0.01)
        return clock.seconds() - start

    def inject(self, auth: ClusterAuthenticator, *messages: ClusterMessage) -> None:
        for message in messages:
            self.network.send((HOST, 5555), (HOST, 1434), auth.seal(message, 1))
        self.run(0.05)

    def active(self, **bounds: int) -> NodeService:
        active = self.node(instances(1, "ACTIVE"), nodeId=1,
                           bounds=StateBounds(**bounds) if bounds else None)
        self.run(2.0)
        assert active.role == "active"
        return active
