"""hypothesis stateful tests of the role machine, driving a simulated cluster."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from srp.server.roles.active import ActiveRole
from srp.testing import FakeNetwork
from tests.cluster_sim import SimCluster, violations

ROLES = {"probing", "binding", "passive", "waiting", "active", "handing-over", "stopped",
         "crashed"}


class ClusterMachine(RuleBasedStateMachine):
    """Random starts, crashes, stops, partitions and waits; the roles stay coherent."""

    cluster: SimCluster

    @initialize(shared=st.booleans(), size=st.integers(2, 5), seed=st.integers(0, 2**16))
    def start(self, shared: bool, size: int, seed: int) -> None:
        self.cluster = SimCluster(FakeNetwork(seed=seed, loss=0.02), sharedHost=shared,
                                  size=size)
        self.cluster.startAll()

    @rule(seconds=st.floats(0.05, 2.0))
    def wait(self, seconds: float) -> None:
        self.cluster.run(seconds, step=0.02)

    @precondition(lambda self: len(self.cluster.live()) > 1)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        live = [i for i, n in enumerate(self.cluster.nodes) if n.alive]
        self.cluster.crash(data.draw(st.sampled_from(live)))

    @precondition(lambda self: len(self.cluster.live()) > 1)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        live = [i for i, n in enumerate(self.cluster.nodes) if n.alive]
        self.cluster.stop(data.draw(st.sampled_from(live)))

    @precondition(lambda self: any(not n.alive for n in self.cluster.nodes))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        dead = [i for i, n in enumerate(self.cluster.nodes) if not n.alive]
        self.cluster.start(data.draw(st.sampled_from(dead)))

    @precondition(lambda self: not self.cluster.sharedHost)
    @rule(cut=st.integers(1, 4))
    def partition(self, cut: int) -> None:
        hosts = [n.host for n in self.cluster.nodes]
        self.cluster.network.partition(hosts[:cut], hosts[cut:])

    @rule()
    def heal(self) -> None:
        self.cluster.network.heal()

    @invariant()
    def rolesAreKnown(self) -> None:
        for node in self.cluster.nodes:
            assert node.service.role in ROLES | {"idle"}

    @invariant()
    def activesHoldTheirPort(self) -> None:
        ports = self.cluster.network._ports
        for node in self.cluster.actives():
            held = ports.get((node.host, 1434))
            role = node.service.membership.current
            assert isinstance(role, ActiveRole)
            assert held is not None and held.protocol in role.ports.responders

    @invariant()
    def oneHostHasOneActive(self) -> None:
        if self.cluster.sharedHost:
            assert len(self.cluster.actives()) <= 1

    @invariant()
    def passivesKnowTheirActive(self) -> None:
        for node in self.cluster.live():
            if node.service.role == "passive":
                assert node.service.membership.current.active is not None

    def teardown(self) -> None:
        if not hasattr(self, "cluster"):
            return
        self.cluster.network.heal()
        self.cluster.network.loss = 0.0
        self.cluster.run(6.0, step=0.05)
        assert violations(self.cluster) == []


ClusterMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=20,
                                            deadline=None)
TestClusterMachine = ClusterMachine.TestCase
