"""
A node's lease, its keys and its leadership (L{NodeLease}), on a Clock with
a fake etcd client whose answers the tests give; the key layout.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from srp.etcd.client import KeyValue, TxnResult, Unreachable, encode
from srp.etcd.keys import ClusterKeys
from srp.server.etcdlease import LEADER_FRACTION, TXN_OPS, NodeLease

KEYS = ClusterKeys("c")
TTL = 2
ME = 0xA1


class FakeClient:
    """What L{NodeLease} asks of etcd; keep-alives wait for the test to answer them."""

    def __init__(self, clock: Clock) -> None:
        self.reactor = clock
        self.leases = 0
        self.txns: list[tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]] = []
        self.keepAlives: list[Deferred[int]] = []
        self.leaderHeldBy: KeyValue | None = None
        self.revision = 10
        self.revoked: list[int] = []

    def grant(self, ttl: int) -> Deferred[tuple[int, int]]:
        self.leases += 1
        return succeed((self.leases, ttl))

    def keepAlive(self, lease: int) -> Deferred[int]:
        answer: Deferred[int] = Deferred()
        self.keepAlives.append(answer)
        return answer

    def revoke(self, lease: int) -> Deferred[None]:
        self.revoked.append(lease)
        return succeed(None)

    def txn(self, compare: list[Any], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] = ()) -> Deferred[TxnResult]:  # type: ignore[assignment]
        self.txns.append((list(compare), list(success), list(failure)))
        self.revision += 1
        if not compare:
            return succeed(TxnResult(True, self.revision, ()))
        if self.leaderHeldBy is None:
            put = success[0]["request_put"]
            self.leaderHeldBy = KeyValue(KEYS.leader, b"%016x" % ME, self.revision,
                                         self.revision, put["lease"])
            return succeed(TxnResult(True, self.revision, ()))
        held = {"response_range": {"kvs": [{
            "key": "", "value": encode(self.leaderHeldBy.value),
            "create_revision": self.leaderHeldBy.createRevision,
            "lease": self.leaderHeldBy.lease}]}}
        return succeed(TxnResult(False, self.revision, (held,)))


def started(elect: bool = True) -> tuple[Clock, FakeClient, NodeLease, list[int | None]]:
    clock = Clock()
    client = FakeClient(clock)
    heard: list[int | None] = []
    lease = NodeLease(client, KEYS, ME, TTL, heard.append, elect=elect)  # type: ignore[arg-type]
    lease.start()
    return clock, client, lease, heard


def test_leadsWithTheCreateRevision() -> None:
    """The first campaign creates the leader key: its revision is the fencing token."""
    _, client, lease, heard = started()
    assert heard == [client.revision]
    assert lease.token == client.revision
    _, success, failure = client.txns[-1]
    assert success[0]["request_put"]["lease"] == 1 and failure


def test_stepsDownBeforeTheLeaseCanExpire() -> None:
    """
    With keep-alives unanswered, the leader stops at LEADER_FRACTION of the
    TTL after the last renewal was sent: before etcd can expire the lease
    and let a successor in.
    """
    clock, client, lease, heard = started()
    token = lease.token
    clock.advance(TTL / 4)
    client.keepAlives[-1].callback(TTL)  # sent at TTL/4: valid until TTL/4 + 0.75 TTL
    for _ in range(2):
        clock.advance(TTL / 4)
        client.keepAlives[-1].errback(Unreachable("down"))
    deadline = TTL / 4 + TTL * LEADER_FRACTION
    clock.advance(deadline - clock.seconds() - 0.01)
    assert heard == [token]
    clock.advance(0.02)
    assert heard == [token, None] and lease.token is None
    assert clock.seconds() < TTL / 4 + TTL  # etcd holds the lease this long at least
    assert lease.reachable is False


def test_notLeadingPastTheDeadlineBeforeItsTimerRuns() -> None:
    """
    A process that was stopped reads before it runs its timers: the clock
    alone says it no longer leads, while the step-down has not run yet.
    """
    clock, _, lease, heard = started()
    assert lease.leading()
    clock.rightNow = lease.validUntil  # the timers that fell due have not run
    assert lease.token is not None and not lease.leading()
    clock.advance(0)
    assert heard[-1] is None


def test_leadsAgainWhenTheLeaseSurvived() -> None:
    """Renewed after stepping down, the lease still holds the key: lead again with its token."""
    clock, client, lease, heard = started()
    token = lease.token
    clock.advance(TTL)
    assert lease.token is None
    client.keepAlives[-1].callback(TTL)
    assert heard == [token, None, token]


def test_campaignsOnlyWhenTheKeyIsFreeOrOwn() -> None:
    """Renewals bring a campaign only while the leader key is absent or this node's."""
    clock, client, lease, heard = started()
    lease.stop()
    client.leaderHeldBy = KeyValue(KEYS.leader, b"%016x" % 0xB2, 5, 5, 99)
    lease = NodeLease(client, KEYS, ME, TTL, heard.append)  # type: ignore[arg-type]
    lease.start()
    campaigns = len(client.txns)
    lease.leaderIs(0xB2)
    for _ in range(4):
        clock.advance(TTL / 4)
        client.keepAlives[-1].callback(TTL)
    assert len(client.txns) == campaigns and lease.token is None
    client.leaderHeldBy = None
    lease.leaderGone()
    assert lease.token == client.revision


def test_expiredLease() -> None:
    """A keep-alive answered with TTL 0: step down at once, get a new lease, write again."""
    clock, client, lease, heard = started()
    lease.set({KEYS.node(ME): b"{}"})
    writes = len(client.txns)
    clock.advance(TTL / 4)
    client.leaderHeldBy = None  # etcd deleted the expired lease's keys
    client.keepAlives[-1].callback(0)
    assert heard[-2:] == [None, client.revision]
    assert lease.lease == 2
    puts = [op for _, ops, _ in client.txns[writes:] for op in ops if "request_put" in op]
    assert {op["request_put"]["lease"] for op in puts} == {2}


def test_writesOnlyChanges() -> None:
    """set() puts what changed and deletes what went, in txns of at most TXN_OPS."""
    _, client, lease, heard = started(elect=False)
    many = {KEYS.registration(ME, f"i{n}"): b"x" for n in range(TXN_OPS + 5)}
    lease.set(many)
    assert [len(ops) for _, ops, _ in client.txns] == [TXN_OPS, 5]
    changed = dict(many)
    changed[KEYS.registration(ME, "i0")] = b"y"
    del changed[KEYS.registration(ME, "i1")]
    lease.set(changed)
    _, ops, _ = client.txns[-1]
    assert sorted(next(iter(op)) for op in ops) == ["request_delete_range", "request_put"]
    assert heard == []


def test_failedWriteRetriedAfterRenewal() -> None:
    """Keys a failed txn did not write are written after the next renewal."""
    clock, client, lease, _ = started(elect=False)
    client.txn = lambda *a, **k: fail(Unreachable("down"))  # type: ignore[method-assign]
    lease.set({KEYS.node(ME): b"{}"})
    del client.txn
    assert client.txns == []
    clock.advance(TTL / 4)
    client.keepAlives[-1].callback(TTL)
    assert [ops for _, ops, _ in client.txns] == [[{"request_put": {
        "key": encode(KEYS.node(ME)), "value": encode(b"{}"), "lease": 1}}]]


def test_stopRevokes() -> None:
    """Stopping steps down and revokes the lease (its keys go with it)."""
    clock, client, lease, heard = started()
    lease.stop()
    assert client.revoked == [1] and heard[-1] is None
    assert not clock.getDelayedCalls()


def test_grantRetried() -> None:
    """With etcd out of reach at the start, the grant is tried again every quarter TTL."""
    clock = Clock()
    client = FakeClient(clock)
    attempts = []

    def grant(ttl: int) -> Deferred[tuple[int, int]]:
        attempts.append(clock.seconds())
        return fail(Unreachable("down")) if len(attempts) < 3 else succeed((7, ttl))

    client.grant = grant  # type: ignore[method-assign]
    lease = NodeLease(client, KEYS, ME, TTL, lambda token: None)  # type: ignore[arg-type]
    lease.start()
    clock.advance(TTL / 4)
    clock.advance(TTL / 4)
    assert attempts == [0, TTL / 4, TTL / 2] and lease.lease == 7 and lease.reachable


def test_keys() -> None:
    """The key layout, and keys read back into what they name."""
    assert KEYS.registration(0xA1, "sales") == b"/srp/c/registrations/00000000000000a1/sales"
    assert KEYS.node(0xA1) == b"/srp/c/nodes/00000000000000a1"
    assert KEYS.parse(KEYS.registration(0xA1, "sales")) == ("registration", 0xA1, "sales")
    assert KEYS.parse(KEYS.node(5)) == ("node", 5, "")
    assert KEYS.parse(KEYS.leader) == ("leader", 0, "")
    for other in (b"/srp/d/leader", b"/srp/c/nodes/xyz", b"/srp/c/registrations/1/",
                  b"/srp/c/other"):
        assert KEYS.parse(other) is None
