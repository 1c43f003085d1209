"""
Registrations beyond one datagram, on a fake network: a Join in parts, the
active assembling it a window at a time, lost and stale and hostile parts,
and a hand-over with a registry too big for one Activate.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srp.authenticator import ClusterAuthenticator
from srp.records import Registration
from srp.server.joins import PART_DATAGRAM, WINDOW, joinParts
from srp.server.node import NodeService
from srp.wire.cluster import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    TAG_SIZE,
    Activate,
    Envelope,
    Join,
    ReJoin,
    clusterId,
)
from tests.cluster_sim import INTERVAL, KEY, MISSES
from tests.large import CLUSTER, HOST, Cluster, instances
from tests.strategies import registrations


def held(active: NodeService, nodeId: int) -> set[Registration]:
    return {r for r in active.registry.registrations() if r.nodeId == nodeId}


def test_a_passive_with_10000_instances_joins() -> None:
    cluster = Cluster()
    active = cluster.active()
    passive = cluster.node(instances(10_000), nodeId=2)
    took = cluster.run(5.0, lambda: active.registry.countOf(2) == 10_000)
    assert passive.role == "passive"
    assert held(active, 2) == set(passive.membership.own)
    assert active.registry.lookup("I9999") == passive.membership.own[-1]
    parts = passive.membership.joinParts.parts
    assert len(parts) > 1000
    assert {p.generation for p in parts} == {passive.membership.joinParts.generation}
    counters = active.membership.counters
    assert counters["join_parts"] == len(parts)
    assert counters["parts_asked"] == -(-len(parts) // WINDOW) - 1
    assert counters["parts_asked_again"] == 0 and counters["joins"] == 1
    assert took < 2.0, "a window per round trip, not a KeepAlive interval"
    # The passive stays joined: its KeepAlives are acknowledged, not answered with ReJoin.
    cluster.run(2.0)
    assert counters["rejoins_asked"] == 0
    assert active.membership.current.passives[0].nodeId == 2


def test_no_request_sees_half_a_join() -> None:
    cluster = Cluster()
    active = cluster.active()
    old, new = instances(3000), instances(3000, port=30000)
    passive = cluster.node(old, nodeId=2)
    cluster.run(3.0, lambda: active.registry.countOf(2) == 3000)
    passive.membership.setOwn(new)
    passive.membership.current.join()  # type: ignore[attr-defined]
    seen = []
    for _ in range(300):
        cluster.run(0.01)
        ports = {r.info.tcp for r in held(active, 2)}
        seen.append(len(held(active, 2)))
        assert ports <= {r.info.tcp for r in old} or ports <= {r.info.tcp for r in new}
        assert len(held(active, 2)) == 3000
    assert {r.info.tcp for r in held(active, 2)} == {r.info.tcp for r in new}


def test_a_lost_part_is_recovered() -> None:
    cluster = Cluster()
    active = cluster.active()
    lost: set[int] = set()

    def loseOnce(envelope: Envelope) -> bool:
        message = envelope.message
        if isinstance(message, Join) and message.part in (5, WINDOW + 3) \
                and message.part not in lost:
            lost.add(message.part)
            return True
        return False

    cluster.drop = loseOnce
    passive = cluster.node(instances(1000), nodeId=2)
    took = cluster.run(5.0, lambda: active.registry.countOf(2) == 1000)
    assert lost == {5, WINDOW + 3}
    assert held(active, 2) == set(passive.membership.own)
    assert active.membership.counters["parts_asked_again"] == 2
    asked = [e.message.parts for e in cluster.sent if isinstance(e.message, ReJoin)
             and e.message.generation]
    # Each stalled window is asked for again from its missing part on.
    assert [p[0] for p in asked if p[0] in lost] == [5, WINDOW + 3]
    assert took < 4 * INTERVAL * 2
    assert passive.role == "passive", "a Join in progress keeps the passive following"


def test_a_lossy_network_still_joins() -> None:
    cluster = Cluster(loss=0.05, duplicate=0.05)
    active = cluster.active()
    passive = cluster.node(instances(2000), nodeId=2)
    cluster.run(20.0, lambda: active.registry.countOf(2) == 2000)
    assert held(active, 2) == set(passive.membership.own)


def _parts(count: int, generation: int, nodeId: int,
           prefix: str = "G") -> tuple[Join, ...]:
    own = tuple(Registration(r.info, nodeId=nodeId) for r in instances(count, prefix))
    return joinParts(own, generation)


def test_parts_of_an_old_generation_are_ignored() -> None:
    cluster = Cluster()
    active = cluster.active()
    auth = ClusterAuthenticator(cluster.network.clock, clusterId(CLUSTER), 77, KEY)
    older, newer = _parts(600, 4, 77, "OLD"), _parts(600, 5, 77, "NEW")
    assert len(older) > 2 and len(newer) > 2
    cluster.inject(auth, *newer[:2])
    cluster.inject(auth, *older)  # every part of generation 4, after 5 began
    counters = active.membership.counters
    assert counters["parts_stale"] == len(older)
    assert held(active, 77) == set()
    cluster.inject(auth, *newer[2:])
    assert {r.name for r in held(active, 77)} == {f"NEW{n}" for n in range(600)}
    cluster.inject(auth, newer[-1], older[0])  # stragglers of applied generations
    assert counters["parts_stale"] == len(older) + 2
    assert counters["joins"] == 1


def test_a_newer_generation_replaces_one_being_assembled() -> None:
    cluster = Cluster()
    active = cluster.active()
    auth = ClusterAuthenticator(cluster.network.clock, clusterId(CLUSTER), 77, KEY)
    older, newer = _parts(600, 4, 77, "OLD"), _parts(600, 5, 77, "NEW")
    cluster.inject(auth, *older[:-1])
    cluster.inject(auth, *newer)
    cluster.inject(auth, older[-1])
    assert {r.name for r in held(active, 77)} == {f"NEW{n}" for n in range(600)}
    assert active.membership.counters["parts_stale"] == 1


def test_hostile_parts_are_rejected_and_counted() -> None:
    cluster = Cluster()
    active = cluster.active(maxRegistrationsPerNode=1000)
    auth = ClusterAuthenticator(cluster.network.clock, clusterId(CLUSTER), 88, KEY)
    parts = _parts(600, 9, 88)
    counters = active.membership.counters
    # A part count that changes within a generation.
    cluster.inject(auth, parts[0], Join(parts[1].registrations, 9, 1, len(parts) + 1))
    assert counters["parts_inconsistent"] == 1
    # Bytes no Join layout allows: generation 0 in parts, a part past the
    # count, a part without registrations.
    body = parts[0].payload()
    for payload in (b"\0\0\0\0" + body[4:], body[:4] + b"\7\0\2\0" + body[8:],
                    body[:8] + b"\0\0"):
        cluster.network.send((HOST, 5555), (HOST, 1434), _sealed(auth, payload))
    cluster.run(0.05)
    assert active.membership.auth.rejected["malformed"] == 3
    # The node's other registrations are someone else's: never taken.
    foreign = tuple(Registration(r.info, nodeId=5) for r in parts[1].registrations)
    cluster.inject(auth, Join(foreign, 11, 0, 2), Join(parts[1].registrations, 11, 1, 2))
    assert {r.nodeId for r in held(active, 88)} == {88}
    assert len(held(active, 88)) == len(parts[1].registrations)
    assert active.role == "active" and active.registry.lookup("ACTIVE0") is not None


def test_joins_being_assembled_are_bounded_by_max_passives() -> None:
    cluster = Cluster()
    active = cluster.active(maxPassives=3)
    for nodeId in range(100, 105):
        auth = ClusterAuthenticator(cluster.network.clock, clusterId(CLUSTER), nodeId, KEY)
        cluster.inject(auth, _parts(600, 1, nodeId)[0])
    assert active.membership.counters["parts_full"] == 2
    # The silent ones are dropped after (misses + 1) intervals: room again.
    cluster.run((MISSES + 2) * INTERVAL)
    auth = ClusterAuthenticator(cluster.network.clock, clusterId(CLUSTER), 200, KEY)
    cluster.inject(auth, *_parts(600, 1, 200))
    assert active.registry.countOf(200) == 600


def _sealed(auth: ClusterAuthenticator, payload: bytes) -> bytes:
    """A version 2 Join with C{payload}, tagged as the cluster key does."""
    auth._last += 1000
    body = struct.pack("<BBHIQIQH", 0xA1, 2, 0, auth.cluster, auth.nodeId, 1,
                       int(auth.clock.seconds() * 1e6) + auth._last, len(payload)) + payload
    return body + hmac.digest(KEY, body, hashlib.sha256)


def test_registrations_past_the_bound_are_refused_once_not_rejoined_forever() -> None:
    cluster = Cluster()
    active = cluster.active(maxRegistrationsPerNode=700)
    cluster.node(instances(1000), nodeId=2)
    cluster.run(3.0)
    counters = active.membership.counters
    assert active.registry.countOf(2) == 700
    assert counters["registrations_refused"] == 1 and counters["joins"] == 1
    assert counters["rejoins_asked"] == 0


@pytest.mark.parametrize("bigFirst", [False, True])
def test_a_hand_over_carries_what_fits_and_the_rest_rejoin(bigFirst: bool) -> None:
    cluster = Cluster()
    active = cluster.active()
    nodes: dict[int, NodeService] = {}
    for nodeId, own in sorted({2: instances(3, "S"), 3: instances(5000)}.items(),
                              reverse=bigFirst):
        nodes[nodeId] = cluster.node(own, nodeId)
        cluster.run(3.0, lambda: active.registry.countOf(nodeId) == len(own))  # noqa: B023
    small, big = nodes[2], nodes[3]
    active.stopService()
    cluster.run(0.05)
    new, other = (big, small) if bigFirst else (small, big)
    assert new.role == "active"
    [activate] = [e.message for e in cluster.sent if isinstance(e.message, Activate)]
    # 5,000 registrations never fit in one datagram; 3 do.
    assert {r.nodeId for r in activate.registrations} == ({2} if bigFirst else set())
    assert held(new, 2) == set(small.membership.own)
    took = cluster.run(5.0, lambda: new.registry.countOf(3) == 5000)
    assert took < 1.0
    assert held(new, 3) == set(big.membership.own)
    assert other.role == "passive"


@settings(max_examples=30, deadline=None)
@given(st.lists(registrations, max_size=60), st.integers(1, 2**32 - 1),
       st.sampled_from([1, 40, 400]))
def test_join_parts_carry_every_registration_in_order(
        own: list[Registration], generation: int, copies: int) -> None:
    everything = tuple(own) * copies
    parts = joinParts(everything, generation)
    assert tuple(r for p in parts for r in p.registrations) == everything
    if len(parts) == 1:
        assert parts[0] == Join(everything)
        assert len(parts[0].payload()) <= MAX_PAYLOAD
        return
    assert [(p.generation, p.part, p.parts) for p in parts] == [
        (generation, n, len(parts)) for n in range(len(parts))]
    for part in parts:
        size = HEADER_SIZE + len(part.payload()) + TAG_SIZE
        assert size <= PART_DATAGRAM or len(part.registrations) == 1
