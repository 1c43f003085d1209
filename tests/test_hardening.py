"""Hardening: reply budgets, access control, bounded state, and the old 1434 CVEs."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from srp.records import InstanceInfo, Registration
from srp.server.access import AccessPolicy, NetworkACL, networks
from srp.server.config import ConfigError, parseConfig
from srp.server.limits import Budget, ReplyLimiter, StateBounds, TokenBucket
from srp.server.registry import Registry
from srp.server.responder import ResolutionResponder
from srp.testing import connectDatagram, exchange
from srp.wire.cluster import Join
from tests.test_cluster_adversarial import Harness, attacker

SALES = Registration(InstanceInfo("DB1", "SALES", tcp=50001))


def responder(**kw: object) -> ResolutionResponder:
    result = ResolutionResponder(Registry([SALES]), Clock(), **kw)  # type: ignore[arg-type]
    connectDatagram(result)
    return result


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(Budget(rate=100, burst=200), tokens=200, stamp=0.0)
    assert bucket.take(0.0, 150)
    assert not bucket.take(0.0, 100)
    assert bucket.take(0.5, 100)
    assert not bucket.take(0.5, 1)


def test_a_flooding_source_is_held_to_its_budget_and_others_are_answered() -> None:
    clock = Clock()
    limiter = ReplyLimiter(clock, perSource=Budget(1000, 2000), overall=Budget(0, 0))
    node = ResolutionResponder(Registry([SALES]), clock, limiter=limiter)
    connectDatagram(node)
    answered = sum(len(exchange(node, b"\x04SALES", ("10.0.0.66", 1))) for _ in range(1000))
    size = len(exchange(node, b"\x04SALES", ("10.0.0.7", 1))[0])
    assert answered == 2000 // size
    assert node.stats.limited == 1000 - answered
    clock.advance(1.0)
    assert len(exchange(node, b"\x04SALES", ("10.0.0.66", 1))) == 1


def test_the_global_budget_bounds_every_source_together() -> None:
    clock = Clock()
    limiter = ReplyLimiter(clock, perSource=Budget(0, 0), overall=Budget(1000, 4000))
    node = ResolutionResponder(Registry([SALES]), clock, limiter=limiter)
    connectDatagram(node)
    sent = sum(len(exchange(node, b"\x04SALES", (f"10.0.{n // 250}.{n % 250}", 1)))
               for n in range(5000))
    assert sent * 70 <= 4000 + 70


def test_limiter_keeps_a_bounded_number_of_sources() -> None:
    limiter = ReplyLimiter(Clock(), maxSources=100)
    for n in range(1000):
        limiter.allow(f"10.1.{n // 250}.{n % 250}", 10)
    assert len(limiter) == 100


def test_denied_networks_are_not_answered() -> None:
    policy = AccessPolicy(clients=NetworkACL(networks(["10.0.0.0/8"]), networks(["10.9.0.0/16"])))
    node = responder(access=policy)
    assert exchange(node, b"\x04SALES", ("10.1.2.3", 1))
    assert not exchange(node, b"\x04SALES", ("10.9.2.3", 1))
    assert not exchange(node, b"\x04SALES", ("192.0.2.1", 1))
    assert node.stats.denied == 2


def test_enumeration_can_be_switched_off_or_restricted() -> None:
    off = responder(access=AccessPolicy(enumeration=False))
    assert not exchange(off, b"\x03") and not exchange(off, b"\x02")
    assert exchange(off, b"\x04SALES")
    some = responder(access=AccessPolicy(enumerators=NetworkACL(networks(["10.0.0.0/8"]))))
    assert exchange(some, b"\x03", ("10.0.0.1", 1))
    assert not exchange(some, b"\x03", ("192.0.2.1", 1))


def test_access_and_limits_from_the_configuration() -> None:
    config = parseConfig({
        "limits": {"reply_rate_per_source": 0, "reply_rate": 1e6, "max_passives": 10},
        "access": {"clients_allow": ["10.0.0.0/8", "::1"], "enumeration": False,
                   "cluster_allow": ["127.0.0.0/8"]},
    })
    assert config.perSource.unlimited and config.overall.rate == 1e6
    assert config.bounds == StateBounds(maxPassives=10)
    assert config.access.clients.permits("::1") and not config.access.clients.permits("::2")
    assert not config.access.mayEnumerate("10.0.0.1")
    assert config.access.cluster.permits("127.0.0.9")


@pytest.mark.parametrize(
    ("document", "complaint"),
    [({"limits": {"reply_rate": -1}}, "reply_rate must be at least 0"),
     ({"limits": {"max_instance": 1}}, "unknown key 'max_instance'"),
     ({"access": {"clients_allow": ["10.0.0.300/8"]}}, "clients_allow: .*10.0.0.300"),
     ({"access": {"enumeration": "no"}}, "enumeration must be true or false")],
)
def test_limit_and_access_mistakes(document: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parseConfig(document, "node.toml")


def test_cve_2002_0649_overlong_names_of_every_length() -> None:
    node = responder()
    sent = 0
    for length in range(33, 65536, 7):
        for datagram in (b"\x04" + b"A" * length, b"\x04" + b"A" * length + b"\x00",
                         b"\x0f\x01" + b"A" * length):
            assert exchange(node, datagram) == []
            sent += 1
    assert node.stats.answered == 0
    assert node.stats.malformed == sent


def test_cve_2002_0650_no_answer_to_0a_or_to_replies() -> None:
    node = responder()
    reply = exchange(node, b"\x04SALES")[0]
    for datagram in (b"\x0a", b"\x0a" * 10, reply, b"\x05\x00\x00", b"\x05\x06\x00\x01\x9a\x05"):
        assert exchange(node, datagram, ("10.0.0.1", 1434)) == []


def test_join_flood_is_bounded() -> None:
    harness = Harness()
    harness.active.membership.bounds = StateBounds(maxRegistrationsPerNode=3, maxInstances=8,
                                                   maxPassives=4)
    for node in range(100, 110):
        insider = attacker(harness, nodeId=node)
        many = tuple(Registration(InstanceInfo("X", f"I{node}_{n}", tcp=1), nodeId=node)
                     for n in range(5))
        harness.inject(insider.seal(Join(many), 1), harness.active)
    membership = harness.active.membership
    assert len(membership.current.passives) == 4
    assert len(harness.active.registry) <= 8
    assert membership.counters["passives_refused"] == 7
    assert membership.counters["registrations_refused"] == 3
    assert membership.counters["instances_refused"] >= 1


def test_cluster_messages_from_denied_networks_are_dropped() -> None:
    harness = Harness()
    harness.active.membership.access = AccessPolicy(cluster=NetworkACL(
        networks(["10.0.0.0/29"])))
    before = set(harness.active.registry.registrations())
    harness.inject(attacker(harness, nodeId=5).seal(Join((
        Registration(InstanceInfo("X", "EVIL", tcp=1), nodeId=5),)), 1), harness.active)
    assert set(harness.active.registry.registrations()) == before
    assert harness.active.membership.counters["denied"] == 1


def test_quiet_sources_are_answered_from_the_reserve_during_a_flood() -> None:
    clock = Clock()
    limiter = ReplyLimiter(clock, perSource=Budget(10_000, 20_000),
                           overall=Budget(1000, 2000), reserve=Budget(1000, 2000))
    busy = [f"10.2.0.{n}" for n in range(50)]
    for _ in range(20):
        for source in busy:
            limiter.allow(source, 500)
        clock.advance(0.1)
        assert limiter.allow("10.3.0.1", 100), "the quiet client is answered"
    assert not limiter.allow(busy[0], 500), "busy sources share the spent global budget"
