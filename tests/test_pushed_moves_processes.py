"""
Moves pushed to clients, with real processes: two nodes serve SALES, each
with a tagged echo server standing in for its instance; the primary's node
stops gracefully (its server runs on, so nothing but the push tells the
client to leave it).  A FailoverClient connected through
`srp:...:subscribe=yes` (a UDP cluster; a cluster on a real etcd) and one
through `srp:...:etcd=...` (plain, and over TLS with a client certificate)
learn of the switchover before their next write, and that write is
answered by the new place with no gap and nothing resent.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from srp.client.endpoint import SRPClientEndpoint, sharedResolver
from srp.client.etcdwatch import EtcdPlaces, WatchEtcd
from srp.client.failover import FailoverClient
from srp.client.resolver import ClusterResolver
from srp.client.subscription import NodeSubscription, SubscribeTo
from srp.interfaces import IFailoverAware, IInstanceResolver
from srp.testing.certs import makePKI
from srp.testing.etcd import EtcdCluster
from srp.testing.processes import (
    NodeProcess,
    TaggedEchoProcess,
    freeLoopbackAddress,
    freeTCPPort,
    writeNodeConfig,
)

from .test_etcd_secure import endpointString

CLUSTER = "pushed"


@implementer(IFailoverAware)
class Asker(Protocol):
    """Writes a line at a time and records which server answered each."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.moves: list[object] = []
        self._pending = b""
        self._waiting: Deferred[bytes] | None = None

    def ask(self, line: bytes) -> Deferred[bytes]:
        self._waiting = Deferred()
        assert self.transport is not None
        self.transport.write(line + b"\n")
        return self._waiting

    def dataReceived(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        self.answers += lines
        if lines and self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(lines[-1])

    def failedOver(self, previous: object, current: object) -> None:
        self.moves.append((previous, current))


class PushedMoveTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def servers(self, primary: str, standby: str) -> list[TaggedEchoProcess]:
        """The primary's and the standby's servers, at these addresses."""
        servers = [TaggedEchoProcess(address, freeTCPPort(address), tag).start()
                   for address, tag in ((primary, "primary"), (standby, "standby"))]
        for server in servers:
            self.addCleanup(server.stop)
        return servers

    def node(self, index: int, address: str, port: int, **cluster: object) -> NodeProcess:
        config = writeNodeConfig(
            self.directory / f"node{index}.toml", [address],
            [{"name": "SALES", "tcp": port, "priority": index, "check": "none"}],
            serverName=f"H{index}", tables={"cluster": {"name": CLUSTER} | cluster})
        process = NodeProcess(config, self.directory / f"node{index}.log").start()
        self.addCleanup(process.stop)
        return process

    async def until(self, condition: object, timeout: float = 5.0) -> None:
        deadline = reactor.seconds() + timeout
        while not condition():  # type: ignore[operator]
            self.assertLess(reactor.seconds(), deadline, "timed out")
            await deferLater(reactor, 0.02, lambda: None)

    async def connect(self, endpoint: SRPClientEndpoint) -> tuple[FailoverClient, Asker]:
        """A FailoverClient through C{endpoint}, answered by the primary."""
        asker = Asker()
        client = FailoverClient(reactor, endpoint, asker)
        self.addCleanup(self.close, client)
        await client.connect()
        self.assertEqual(await asker.ask(b"1"), b"primary:1")
        return client, asker

    async def close(self, client: FailoverClient) -> None:
        await client.close()
        # The etcd watch's connections close in the next turns.
        await deferLater(reactor, 0.2, lambda: None)

    async def switchedOver(self, node: NodeProcess,
                           *clients: tuple[FailoverClient, Asker]) -> None:
        """
        C{node} (the primary's) stops gracefully: each client moves before
        its next write, which the standby answers, with nothing resent.
        """
        os.kill(node.pid, signal.SIGTERM)
        await self.until(lambda: all(client.moves == 1 and client.link is not None
                                     for client, _ in clients), timeout=5.0)
        self.assertEqual(node.process.wait(10), 0)  # type: ignore[union-attr]
        for _, asker in clients:
            self.assertEqual(await asker.ask(b"2"), b"standby:2")
        await deferLater(reactor, 0.3, lambda: None)
        for client, asker in clients:
            self.assertEqual(asker.answers, [b"primary:1", b"standby:2"], "nothing resent")
            self.assertEqual((len(asker.moves), client.failovers), (1, 1))
            [(_, gap)] = client.gaps
            self.assertLess(gap, 0.05, "the move happened before the write")

    async def test_a_udp_cluster_pushes_a_graceful_switchover(self) -> None:
        """The primary's node is the active: it pushes as it hands over."""
        address = freeLoopbackAddress()
        servers = self.servers(address, address)
        nodes = [self.node(index, address, servers[index].port) for index in (0, 1)]
        await self.until(lambda: "Active for cluster" in nodes[0].log())
        await self.until(lambda: "Passive in cluster" in nodes[1].log())
        endpoint = SRPClientEndpoint(reactor, address, "SALES",
                                     ClusterResolver(reactor, clusterName=CLUSTER),
                                     subscribe=SubscribeTo(clusterName=CLUSTER), timeout=1.0)
        client = await self.connect(endpoint)
        subscription = endpoint.subscription
        assert isinstance(subscription, NodeSubscription)
        await self.until(lambda: subscription.confirmed)
        await self.switchedOver(nodes[0], client)
        # The subscription lives on at the new active.
        await self.until(lambda: subscription.confirmed)

    async def onEtcd(self, etcd: EtcdCluster, resolver: IInstanceResolver,
                     **cluster: object) -> tuple[list[NodeProcess], str]:
        """
        Two nodes serving SALES on C{etcd} (with C{cluster}'s settings), each
        at an address of its own, once the standby's node knows both
        registrations (as C{resolver} asks it): the nodes, and the standby's
        node's address.
        """
        first = freeLoopbackAddress()
        addresses = [first, freeLoopbackAddress(first=int(first.rpartition(".")[2]) + 1)]
        # An instance's place is its node's address: each server is at its node's.
        servers = self.servers(*addresses)
        nodes = [self.node(index, address, servers[index].port, backend="etcd",
                           etcd=etcd.endpoints, lease_ttl=1, **cluster)
                 for index, address in enumerate(addresses)]
        standbyNode = nodes[1].address
        await self.until(lambda: "Cluster pushed on etcd" in nodes[0].log()
                         and "Cluster pushed on etcd" in nodes[1].log())
        deadline = reactor.seconds() + 5
        while True:  # until the standby's node knows both registrations
            resolver.purge(standbyNode, "SALES")
            resolution = await resolver.resolve(standbyNode, "SALES")
            if len(resolution.candidates) == 2:
                return nodes, standbyNode
            self.assertLess(reactor.seconds(), deadline, "the registrations did not meet")
            await deferLater(reactor, 0.05, lambda: None)

    async def test_a_cluster_on_etcd_pushes_a_graceful_switchover(self) -> None:
        """
        Each node at an address of its own, on a real three-member etcd; one
        client subscribed through the standby's node, one watching etcd.
        """
        etcd = EtcdCluster(size=3).start()
        self.addCleanup(etcd.stop)
        resolver = ClusterResolver(reactor, clusterName=CLUSTER)
        nodes, standbyNode = await self.onEtcd(etcd, resolver)

        def endpoint(**options: object) -> SRPClientEndpoint:
            return SRPClientEndpoint(reactor, standbyNode, "SALES", resolver, timeout=1.0,
                                     **options)  # type: ignore[arg-type]

        throughNode = endpoint(subscribe=SubscribeTo(clusterName=CLUSTER))
        throughEtcd = endpoint(etcd=WatchEtcd(tuple(etcd.endpoints), CLUSTER))
        clients = [await self.connect(throughNode), await self.connect(throughEtcd)]
        subscription = throughNode.subscription
        assert isinstance(subscription, NodeSubscription)
        await self.until(lambda: subscription.confirmed)
        watch = throughEtcd.subscription
        assert isinstance(watch, EtcdPlaces)
        await self.until(lambda: watch.last is not None)
        await self.switchedOver(nodes[0], *clients)

    async def test_an_endpoint_watches_etcd_over_tls(self) -> None:
        """
        An etcd that takes only clients with a certificate of its CA: an
        endpoint parsed from `srp:...:etcd=https\\://...:etcd_ca=...:etcd_cert=...:
        etcd_key=...` resolves, watches etcd and learns of the switchover.
        """
        pki = makePKI(self.directory / "pki")
        etcd = EtcdCluster(size=1, tls=pki).start()
        self.addCleanup(etcd.stop)
        files = {"etcd_ca": str(pki.ca.cert), "etcd_cert": str(pki.client.cert),
                 "etcd_key": str(pki.client.key)}
        options = {"cluster": CLUSTER, "timeout": "1", "etcd": etcd.endpoints[0]} | files
        resolver = sharedResolver(reactor, clusterName=CLUSTER)
        nodes, standbyNode = await self.onEtcd(etcd, resolver, **files)
        endpoint = clientFromString(reactor, endpointString(f"{standbyNode}/SALES", **options))
        assert isinstance(endpoint, SRPClientEndpoint) and endpoint.resolver is resolver
        self.assertTrue(etcd.endpoints[0].startswith("https://127.0.0.1:"))
        client = await self.connect(endpoint)
        watch = endpoint.subscription
        assert isinstance(watch, EtcdPlaces)
        await self.until(lambda: watch.last is not None)
        assert watch.last is not None
        self.assertEqual([c.host for c in watch.last], [nodes[0].address, standbyNode])
        self.assertIsNone(watch.error)
        await self.switchedOver(nodes[0], client)
