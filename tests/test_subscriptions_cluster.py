"""
Moves pushed by a UDP cluster of srp nodes on a fake network: a client
subscribed to an instance hears of every change of its answer, through
graceful stops, takeovers and health changes.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from srp.client.resolver import Candidate
from srp.client.subscription import NodeSubscription, SubscribeTo
from srp.testing import FakeNetwork
from tests.cluster_sim import KEY, SimCluster

Place = tuple[str, int | None, bool]


class PushedMovesTests(SynchronousTestCase):
    """
    Three nodes on three hosts; SHARED is registered by node 0 (priority 0,
    the first active) and node 2 (priority 2); a client at 10.0.0.100
    subscribes to it at every cluster address.
    """

    def setUp(self) -> None:
        self.cluster = SimCluster(FakeNetwork(seed=5), sharedHost=False, size=3)
        self.cluster.start(0)
        self.cluster.run(1.5)
        self.cluster.start(1)
        self.cluster.start(2)
        self.cluster.run(2.0)
        assert self.cluster.actives() == [self.cluster.nodes[0]]
        self.heard: list[tuple[float, list[Place]]] = []
        self.subscription = NodeSubscription(
            self.cluster.network.reactor("10.0.0.100"),
            SubscribeTo(clusterName="sim", key=KEY, ttl=3.0), "shared", self.notified)
        self.subscription.start(self.cluster.addresses)
        self.cluster.run(0.5)

    def notified(self, candidates: tuple[Candidate, ...], source: str) -> None:
        self.heard.append((self.cluster.network.clock.seconds(),
                           [(c.host, c.info.tcp, c.down) for c in candidates]))

    def last(self) -> list[Place]:
        return self.heard[-1][1]

    def test_the_current_answer_first(self) -> None:
        self.assertEqual([places for _, places in self.heard],
                         [[("10.0.0.1", 30000, False), ("10.0.0.3", 30002, False)]])

    def test_a_standby_leaving_is_pushed(self) -> None:
        self.cluster.stop(2)
        start = self.cluster.network.clock.seconds()
        self.cluster.run(0.2)
        self.assertEqual(self.last(), [("10.0.0.1", 30000, False)])
        self.assertLess(self.heard[-1][0] - start, 0.1)

    def test_the_active_primary_stopping_is_pushed_and_the_next_active_pushes(self) -> None:
        start = self.cluster.network.clock.seconds()
        self.cluster.stop(0)
        self.cluster.run(0.1)
        self.assertEqual(self.last(), [("10.0.0.3", 30002, False)])
        self.assertLess(self.heard[-1][0] - start, 0.05, "pushed as the hand-over began")
        # The subscription was taken up by the new active, which pushes the next change.
        self.cluster.run(2.0)
        [active] = self.cluster.actives()
        self.assertEqual(len(active.service.membership.subscriptions), 1)
        self.cluster.switch(2, up=False)
        self.cluster.run(2.0)
        self.assertEqual(self.last(), [("10.0.0.3", 30002, True)])

    def test_the_primary_coming_back_is_pushed(self) -> None:
        self.cluster.stop(0)
        self.cluster.run(3.0)
        self.cluster.start(0)
        self.cluster.run(2.0)
        self.assertEqual(self.last(), [("10.0.0.1", 30000, False), ("10.0.0.3", 30002, False)])

    def test_a_crashed_active_is_replaced_within_a_renewal(self) -> None:
        self.cluster.crash(0)
        start = self.cluster.network.clock.seconds()
        self.cluster.run(4.0)
        self.assertEqual(self.last(), [("10.0.0.3", 30002, False)])
        # Takeover (about a second), then the next renewal (a third of the lifetime).
        self.assertLess(self.heard[-1][0] - start, 1.5 + 1.0)

    def test_a_lapsed_client_is_forgotten(self) -> None:
        # The client dies: it neither renews nor unsubscribes.
        self.subscription._cancel()
        self.subscription.transport = None
        self.cluster.run(3.5)
        [active] = self.cluster.actives()
        active.service.membership.subscriptions.sweep()
        self.assertEqual(len(active.service.membership.subscriptions), 0)
        self.assertEqual(active.service.membership.counters["subscriptions_lapsed"], 1)

    def tearDown(self) -> None:
        if self.subscription.transport is not None:
            self.subscription.stop()
