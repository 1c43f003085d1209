"""Sealing and opening cluster messages: keys, loopback rule, replay and staleness."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from srp.authenticator import FRESHNESS, ClusterAuthenticator, Rejected
from srp.wire.cluster import KeepAlive, Probe, clusterId

CLUSTER = clusterId("test")


def pair(key: bytes = b"secret") -> tuple[Clock, ClusterAuthenticator, ClusterAuthenticator]:
    clock = Clock()
    clock.advance(1_000_000)
    return clock, ClusterAuthenticator(clock, CLUSTER, 1, key), ClusterAuthenticator(
        clock, CLUSTER, 2, key)


def test_sealed_message_opens() -> None:
    _, alice, bob = pair()
    envelope = bob.open(alice.seal(KeepAlive(2), epoch=5), "10.0.0.1")
    assert (envelope.message, envelope.sender, envelope.epoch) == (KeepAlive(2), 1, 5)


def test_sequences_strictly_increase_on_a_frozen_clock() -> None:
    _, alice, bob = pair()
    for _ in range(5):
        bob.open(alice.seal(Probe(), 1), "10.0.0.1")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "tag"),
        (lambda d: d[:40], "truncated"),
    ],
)
def test_tampered_messages_are_rejected_and_counted(mutate: object, reason: str) -> None:
    _, alice, bob = pair()
    with pytest.raises(Rejected) as caught:
        bob.open(mutate(alice.seal(KeepAlive(1), 1)), "10.0.0.1")  # type: ignore[operator]
    assert caught.value.reason == reason
    assert bob.rejected[reason] == 1


def test_forged_with_another_key() -> None:
    clock, _, bob = pair()
    mallory = ClusterAuthenticator(clock, CLUSTER, 9, b"guess")
    with pytest.raises(Rejected, match="cluster key"):
        bob.open(mallory.seal(Probe(), 1), "10.0.0.1")


def test_wrong_cluster() -> None:
    clock, _, bob = pair()
    other = ClusterAuthenticator(clock, clusterId("other"), 9, b"secret")
    with pytest.raises(Rejected) as caught:
        bob.open(other.seal(Probe(), 1), "10.0.0.1")
    assert caught.value.reason == "cluster"


def test_replayed_message_is_rejected() -> None:
    _, alice, bob = pair()
    datagram = alice.seal(Probe(), 1)
    bob.open(datagram, "10.0.0.1")
    with pytest.raises(Rejected) as caught:
        bob.open(datagram, "10.0.0.1")
    assert caught.value.reason == "replayed"


def test_reordered_messages_within_the_window_are_accepted_once() -> None:
    clock, alice, bob = pair()
    first = alice.seal(Probe(), 1)
    clock.advance(0.001)
    second = alice.seal(Probe(), 1)
    bob.open(second, "10.0.0.1")
    bob.open(first, "10.0.0.1")
    with pytest.raises(Rejected, match="seen"):
        bob.open(first, "10.0.0.1")


def test_stale_message_is_rejected_even_by_a_node_that_never_heard_the_sender() -> None:
    clock, alice, bob = pair()
    datagram = alice.seal(Probe(), 1)
    clock.advance(FRESHNESS + 1)
    with pytest.raises(Rejected) as caught:
        bob.open(datagram, "10.0.0.1")
    assert caught.value.reason == "stale"


def test_own_messages_are_rejected() -> None:
    _, alice, _ = pair()
    with pytest.raises(Rejected) as caught:
        alice.open(alice.seal(Probe(), 1), "10.0.0.1")
    assert caught.value.reason == "self"


def test_without_a_key_only_loopback_is_accepted() -> None:
    _, alice, bob = pair(key=b"")
    bob.open(alice.seal(Probe(), 1), "127.0.0.5")
    bob.open(alice.seal(Probe(), 1), "::1")
    with pytest.raises(Rejected) as caught:
        bob.open(alice.seal(Probe(), 1), "10.0.0.1")
    assert caught.value.reason == "unauthenticated"
