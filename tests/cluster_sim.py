"""
A cluster of srp nodes on a L{FakeNetwork}: what the deterministic cluster
tests and the seeded simulation drive.  The servers behind the instances
exist only in a L{SwitchedCheck}: the simulation takes them down and
brings them back while their nodes live.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from attrs import define, field

from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.health import HealthSettings
from srp.server.node import NodeService
from srp.testing import FakeHostReactor, FakeNetwork, SwitchedCheck

INTERVAL = 0.25
MISSES = 3
#: How long after a node dies its registrations may still be answered:
#: (misses + 1) KeepAlive intervals, checked once an interval.
EXPIRY = (MISSES + 2) * INTERVAL
#: The instances' health checks: every interval, down after FALL failures.
HEALTH = HealthSettings(check=SwitchedCheck.name, interval=INTERVAL, fall=3, rise=2)
#: How long after its server went down (or its node last resumed) an
#: active may still answer with a registration not marked down: the
#: checks' detection, then the node's registrations expiring at the active
#: (a partitioned or frozen node) or a lost Join re-asked on a lossy network.
DOWN_BOUND = (HEALTH.fall + 1) * HEALTH.interval + EXPIRY + 4 * INTERVAL
KEY = b"0123456789abcdef0123456789abcdef"


@define
class SimNode:
    """One node of the simulation: its service and what it registers."""

    name: str
    host: str
    service: NodeService
    reactor: FakeHostReactor
    alive: bool = True
    diedAt: float | None = None
    #: When the node last started or resumed running (after SIGCONT).
    resumedAt: float = 0.0

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """The node's registrations as it registers them now (with their health)."""
        return tuple(self.service.membership.own)

    @property
    def frozen(self) -> bool:
        """Whether the node's process is stopped (SIGSTOP)."""
        return self.reactor.frozen


@define
class SimCluster:
    """
    Nodes on one fake network.

    C{sharedHost} puts every node on one address (the one-host model: the
    cluster port is the mutex); otherwise each node has its own address and
    the cluster addresses are all of them (the multi-host model).
    """

    network: FakeNetwork
    sharedHost: bool = True
    size: int = 5
    nodes: list[SimNode] = field(factory=list)
    servers: SwitchedCheck = field(factory=SwitchedCheck)
    #: The registrations by command asked for: the latest time each may end
    #: (reactor seconds), by the node id it registers as.
    leases: dict[int, float] = field(factory=dict)
    _started: int = 0

    def hostOf(self, index: int) -> str:
        return "127.0.0.1" if self.sharedHost else f"10.0.0.{index + 1}"

    @property
    def addresses(self) -> tuple[str, ...]:
        return ("127.0.0.1",) if self.sharedHost else tuple(
            self.hostOf(n) for n in range(self.size))

    def registrationsFor(self, index: int) -> tuple[Registration, ...]:
        own = Registration(InstanceInfo(f"HOST{index}", f"N{index}", tcp=20000 + index))
        shared = Registration(InstanceInfo(f"HOST{index}", "SHARED", tcp=30000 + index),
                              priority=index)
        return (own, shared) if index % 2 == 0 else (own,)

    def start(self, index: int) -> SimNode:
        """Start (or restart, as a new node id) the node at C{index}."""
        self._started += 1
        host = self.hostOf(index)
        registrations = self.registrationsFor(index)
        config = NodeConfig(
            listen=(host,), port=1434, instances=registrations,
            cluster=ClusterConfig(name="sim", addresses=self.addresses, interval=INTERVAL,
                                  misses=MISSES, key=KEY),
            health={r.key: HEALTH for r in registrations},
        )
        nodeId = self.network.random.getrandbits(64) | 1
        reactor = self.network.reactor(host)
        service = NodeService(config, reactor, nodeId=nodeId,
                              checks={SwitchedCheck.name: self.servers})
        # No servers run behind the registrations by command.
        service.membership.leases.check = None
        node = SimNode(f"node{index}", host, service, reactor,
                       resumedAt=self.network.clock.seconds())
        service.startService()
        while len(self.nodes) <= index:
            self.nodes.append(node)
        self.nodes[index] = node
        return node

    def startAll(self) -> None:
        for index in range(self.size):
            self.start(index)

    def crash(self, index: int) -> None:
        node = self.nodes[index]
        if node.alive:
            node.service.membership.halt()
            node.alive = False
            node.diedAt = self.network.clock.seconds()

    def freeze(self, index: int) -> None:
        """Stop the node's process, as SIGSTOP does."""
        self.nodes[index].reactor.freeze()

    def thaw(self, index: int) -> None:
        """Let the node's process run again, as SIGCONT does."""
        self.nodes[index].reactor.thaw()
        self.nodes[index].resumedAt = self.network.clock.seconds()

    def switch(self, index: int, up: bool) -> None:
        """Take the servers of node C{index}'s instances down, or bring them back."""
        for registration in self.registrationsFor(index):
            assert registration.info.tcp is not None
            self.servers.switch(self.hostOf(index), registration.info.tcp, up,
                                self.network.clock.seconds())

    def stop(self, index: int) -> Any:
        node = self.nodes[index]
        if not node.alive:
            return None
        node.alive = False
        done = node.service.stopService()
        done.addCallback(lambda _: setattr(node, "diedAt", self.network.clock.seconds()))
        return done

    def run(self, seconds: float, step: float = 0.01) -> None:
        clock = self.network.clock
        end = clock.seconds() + seconds
        while clock.seconds() < end:
            clock.advance(step)

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive]

    def actives(self) -> list[SimNode]:
        """The live nodes that are active and run (a frozen one answers nothing)."""
        return [n for n in self.live() if n.service.role == "active" and not n.frozen]

    def roles(self) -> list[str]:
        return [n.service.role if n.alive else "dead" for n in self.nodes]

    def answered(self, name: str) -> Registration | None:
        """What the (single) active tells an [MC-SQLR] client about C{name}."""
        [active] = self.actives()
        return active.service.registry.lookup(name)


def expectedBest(nodes: Sequence[SimNode], name: str) -> Registration | None:
    """
    The registration of C{name} that the live nodes' priorities and their
    health checks make best: the best one not down, else the best one.
    """
    candidates = sorted((r for n in nodes for r in n.registrations if r.key == name.upper()),
                        key=lambda r: (r.down, r.priority))
    return candidates[0] if candidates else None


def violations(cluster: SimCluster) -> list[str]:
    """Every invariant the settled cluster breaks, described."""
    problems = []
    live = cluster.live()
    actives = cluster.actives()
    if len(actives) != 1:
        return [f"{len(actives)} actives; roles {cluster.roles()}"]
    [active] = actives
    others = [n.service.role for n in live if n is not active]
    if any(role != "passive" for role in others):
        problems.append(f"non-passive roles {cluster.roles()}")
    held = set(active.service.registry.registrations())
    for node in live:
        for registration in node.registrations:
            if registration not in held:
                problems.append(f"{registration.name} of {node.name} "
                                f"({registration.nodeId:x}) is not registered")
    registered = {r for n in live for r in n.registrations}
    for registration in {r for r in held if r.nodeId not in cluster.leases} - registered:
        problems.append(f"{registration.name} of node {registration.nodeId:x} is answered "
                        "but no live node registers it")
    for name in {r.name for n in live for r in n.registrations}:
        best = expectedBest(live, name)
        got = active.service.registry.lookup(name)
        if got is None or best is None or (got.priority, got.down) != (best.priority, best.down):
            problems.append(f"{name} answered with {got}, expected priority "
                            f"{best.priority if best else None}, down {best and best.down}")
    return problems


def deadAnswered(cluster: SimCluster) -> list[str]:
    """Registrations of nodes dead for longer than L{EXPIRY} that an active still holds."""
    now = cluster.network.clock.seconds()
    dead = {r.nodeId for n in cluster.nodes if not n.alive and n.diedAt is not None
            and now - n.diedAt > EXPIRY for r in n.registrations}
    return [f"{r.name} of dead node {r.nodeId:x}"
            for active in cluster.actives()
            for r in active.service.registry.registrations() if r.nodeId in dead]


def downAnswered(cluster: SimCluster) -> list[str]:
    """
    Registrations an active answers with, not marked down, although their
    server has been down for longer than L{DOWN_BOUND} (counted from when
    their node last started or resumed, whose checks start afresh).
    """
    now = cluster.network.clock.seconds()
    nodes = {r.nodeId: n for n in cluster.nodes for r in n.registrations}
    problems = []
    for active in cluster.actives():
        if now - active.resumedAt < 2 * INTERVAL:
            continue  # a thawed active answers from what it knew for one interval
        for name in {r.name for r in active.service.registry.registrations()}:
            answered = active.service.registry.lookup(name)
            if answered is None or answered.down or answered.info.tcp is None:
                continue
            node = nodes.get(answered.nodeId)
            off = None if node is None else cluster.servers.off.get(
                (node.host, answered.info.tcp))
            if off is not None and node is not None and (
                    now - max(off, node.resumedAt) > DOWN_BOUND):
                problems.append(f"{name} of {node.name} answered as up, its server down "
                                f"for {now - off:.2f} s")
    return problems


def expiredAnswered(cluster: SimCluster) -> list[str]:
    """Registrations by command an active still holds more than an interval after they end."""
    now = cluster.network.clock.seconds()
    return [f"{r.name} at priority {r.priority}, registered by command, "
            f"{now - cluster.leases[r.nodeId]:.2f} s after it ended"
            for active in cluster.actives()
            for r in active.service.registry.registrations()
            if r.nodeId in cluster.leases and now > cluster.leases[r.nodeId] + INTERVAL]


def unreachable(cluster: SimCluster) -> list[str]:
    """
    Every answer at an active's address that names a port not reachable
    there: another host's registration must be answered with the port of a
    relay listening at the active's address, aimed at the registration.
    """
    hostOf = {r.nodeId: n.host for n in cluster.live() for r in n.registrations}
    problems = []
    for active in cluster.actives():
        problems += _unreachableAt(active, hostOf, cluster.network.listeners)
    return problems


def _unreachableAt(active: SimNode, hostOf: dict[int, str],
                   listening: Collection[tuple[str, int]]) -> list[str]:
    membership = active.service.membership
    problems = []
    for answered in membership.remote.view(active.host).visible():
        registered = active.service.registry.lookup(answered.name)
        if registered is None or registered.nodeId not in hostOf:
            continue  # a registration by command: no node's host
        where = hostOf[registered.nodeId]
        if where == active.host:
            if answered != registered:
                problems.append(f"{answered.name}: own host's answered as {answered.info}")
            continue
        relay = membership.remote.relays.get(answered.key)
        if relay is None or answered.info.tcp != relay.portAt(active.host):
            problems.append(f"{answered.name} of {where}: answered without its relay")
        elif (active.host, answered.info.tcp) not in listening:
            problems.append(f"{answered.name}: relay port {answered.info.tcp} not listening")
        elif relay.target != (where, registered.info.tcp):
            problems.append(f"{answered.name}: relay goes to {relay.target}, not {where}")
    return problems
