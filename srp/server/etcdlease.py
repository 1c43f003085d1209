"""
A node's presence in etcd: its lease, the keys on it, and the election.

Key layout under C{/srp/CLUSTER/} (L{ClusterKeys <srp.etcd.keys.ClusterKeys>}):

  - C{nodes/NODE}: the node's addresses (JSON), on its lease;
  - C{registrations/NODE/INSTANCE}: one registration, encoded as a Join
    carries it, on its lease;
  - C{leader}: the leader's node id, on its lease, created only where no
    key exists (a txn comparing its create revision with 0); its create
    revision is the leader's fencing token.

NODE is the node id as 16 hex digits, INSTANCE the instance's
case-insensitive key.  When a node dies its lease expires and etcd deletes
all of its keys at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.etcd.client import Compare, EtcdClient, EtcdError, deleteOp, putOp, rangeOp
from srp.etcd.keys import ClusterKeys

#: The leader acts for at most this fraction of the lease TTL after the
#: keep-alive that last renewed its lease was sent: etcd can expire the lease
#: (and so let a successor in) only a whole TTL after it received that request.
LEADER_FRACTION = 0.75
#: The most operations one txn carries (etcd refuses more than 128 by default).
TXN_OPS = 100
#: How many of a write's txns are in flight at once: a node with thousands
#: of registrations is written in parallel batches, not one round trip each.
TXN_WINDOW = 8


class NodeLease:
    """
    A node's lease, kept alive every quarter TTL; the keys that should be on
    it (L{set}), written after every change and again on a new lease; and,
    if C{elect}, the leadership, which C{onLeader} hears of (a fencing token,
    or L{None} when the node stops leading).
    """

    log = Logger()

    def __init__(self, client: EtcdClient, keys: ClusterKeys, nodeId: int, ttl: int,
                 onLeader: Callable[[int | None], None],
                 onReachable: Callable[[bool], None] = lambda reachable: None,
                 elect: bool = True) -> None:
        self.client = client
        self.reactor = client.reactor
        self.keys = keys
        self.nodeId = nodeId
        self.ttl = ttl
        self.onLeader = onLeader
        self.onReachable = onReachable
        self.elect = elect
        #: The lease's id (0: none yet, or lost).
        self.lease = 0
        #: Whether the last request to etcd got an answer, and why the last
        #: one that did not failed.
        self.reachable = True
        self.error = ""
        #: The fencing token while this node leads.
        self.token: int | None = None
        #: Until when (reactor seconds) this node may act as leader:
        #: LEADER_FRACTION of the TTL after its last confirmed renewal was sent.
        self.validUntil = 0.0
        #: Whether to campaign after each renewal while not leading: the
        #: leader key is absent, or holds this node's id (the watch says).
        self.contest = True
        self._values: dict[bytes, bytes] = {}
        self._written: dict[bytes, bytes] = {}
        self._writing = False
        self._running = False
        self._timer: IDelayedCall | None = None
        self._leading: IDelayedCall | None = None

    def leading(self) -> bool:
        """
        Whether this node may act as leader now: it holds the token and its
        lease is still valid by the clock, even if the timer that steps it
        down has not run yet (the process was stopped, and reads before it
        runs its timers).
        """
        return self.token is not None and self.reactor.seconds() < self.validUntil

    @property
    def synced(self) -> bool:
        """Whether every key this node should have is in etcd, as it should be."""
        return bool(self.lease) and self._written == self._values

    def set(self, values: Mapping[bytes, bytes]) -> None:
        """The keys this node should have on its lease now (the others go)."""
        self._values = dict(values)
        self._write()

    def start(self) -> None:
        """Get a lease, write the keys, and campaign."""
        self._running = True
        self._grant()

    def stop(self) -> Deferred[None]:
        """Stop leading, and revoke the lease: every key on it goes at once."""
        self._running = False
        for call in (self._timer, self._leading):
            if call is not None and call.active():
                call.cancel()
        self._stepDown()
        lease, self.lease = self.lease, 0
        if not lease:
            return succeed(None)
        revoked: Deferred[None] = self.client.revoke(lease)
        revoked.addErrback(lambda f: self.log.warn("Could not revoke the etcd lease: "
                                                   "{error}", error=f.getErrorMessage()))
        return revoked

    def leaderGone(self) -> None:
        """The leader key was deleted: try to become the leader."""
        self.contest = True
        self._campaign()

    def leaderIs(self, nodeId: int) -> None:
        """The leader key names C{nodeId}: campaign after renewals only if it is this node."""
        self.contest = nodeId == self.nodeId

    def _later(self, delay: float, call: Callable[[], None]) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(delay, call) if self._running else None

    def _answered(self, reachable: bool) -> None:
        if reachable != self.reachable:
            self.reachable = reachable
            self.onReachable(reachable)

    def _grant(self) -> None:
        sent = self.reactor.seconds()

        def granted(result: tuple[int, int]) -> None:
            self._answered(True)
            if not self._running:  # stopped meanwhile
                self.client.revoke(result[0]).addErrback(lambda f: None)
                return
            self.lease, self.ttl = result
            self._written = {}
            self._confirmed(sent)
            self._write()
            self._campaign()
            self._later(self.ttl / 4, self._keepAlive)

        def failed(failure: Failure) -> None:
            self._unanswered(failure, "grant an etcd lease")
            self._later(self.ttl / 4, self._grant)

        self.client.grant(self.ttl).addCallbacks(granted, failed)

    def _keepAlive(self) -> None:
        sent, lease = self.reactor.seconds(), self.lease

        def renewed(ttl: int) -> None:
            self._answered(True)
            if lease != self.lease:
                return
            if ttl <= 0:
                self.log.warn("The etcd lease {lease:x} expired: registering again",
                              lease=lease)
                self.lease = 0
                self._stepDown()
                self._grant()
                return
            self._confirmed(sent)
            self._write()  # anything a failed write left out
            if self.token is None and self.contest:
                self._campaign()
            self._later(self.ttl / 4, self._keepAlive)

        def failed(failure: Failure) -> None:
            self._unanswered(failure, "keep the etcd lease alive")
            self._later(self.ttl / 4, self._keepAlive)

        self.client.keepAlive(lease).addCallbacks(renewed, failed)

    def _unanswered(self, failure: Failure, doing: str) -> None:
        self.error = failure.getErrorMessage()
        if not failure.check(EtcdError):
            self.log.failure("Could not {doing}", failure, doing=doing)
        elif self.reachable:
            self.log.warn("Could not {doing}: {error}", doing=doing,
                          error=failure.getErrorMessage())
        self._answered(False)

    def _confirmed(self, sent: float) -> None:
        self.validUntil = sent + self.ttl * LEADER_FRACTION
        if self.token is not None:
            self._holdUntil()

    def _holdUntil(self) -> None:
        if self._leading is not None and self._leading.active():
            self._leading.cancel()
        delay = max(0.0, self.validUntil - self.reactor.seconds())
        self._leading = self.reactor.callLater(delay, self._deadline)

    def _deadline(self) -> None:
        self._leading = None
        self.log.warn("The etcd lease was not renewed in time: no longer the leader")
        self._stepDown()

    def _write(self) -> None:
        if not self.lease or self._writing:
            return
        lease, values = self.lease, dict(self._values)
        ops = [putOp(k, v, lease) for k, v in values.items() if self._written.get(k) != v]
        ops += [deleteOp(k) for k in self._written.keys() - values.keys()]
        if not ops:
            return
        self._writing = True
        window = DeferredSemaphore(TXN_WINDOW)
        # Every batch ends before the next write starts, even when one fails.
        written: Deferred[Any] = DeferredList(
            [window.run(self.client.txn, [], ops[n:n + TXN_OPS])
             for n in range(0, len(ops), TXN_OPS)], consumeErrors=True)

        def done(results: list[tuple[bool, Any]]) -> None:
            self._writing = False
            failures = [result for ok, result in results if not ok]
            if failures:
                failed(failures[0])
            elif lease == self.lease:
                self._written = values
                self._write()  # anything set in the meantime

        def failed(failure: Failure) -> None:
            self._writing = False
            self._unanswered(failure, "write this node's registrations to etcd")
            self._later(self.ttl / 4, self._keepAlive)

        written.addCallbacks(done, failed)

    def _campaign(self) -> None:
        if not (self.elect and self.lease and self._running) or self.token is not None:
            return
        lease, key = self.lease, self.keys.leader
        me = f"{self.nodeId:016x}".encode()
        trying = self.client.txn([Compare(key, 0)], [putOp(key, me, lease)], [rangeOp(key)])

        def decided(result: Any) -> None:
            if lease != self.lease or self.token is not None:
                return
            if result.succeeded:
                self._lead(result.revision)
                return
            holders = result.ranged()
            if holders and holders[0].value == me and holders[0].lease == lease:
                self._lead(holders[0].createRevision)  # still ours, from before

        trying.addCallbacks(decided, lambda f: self._unanswered(f, "campaign for leader"))

    def _lead(self, token: int) -> None:
        if self.reactor.seconds() >= self.validUntil:
            return
        self.token = token
        self._holdUntil()
        self.log.info("Leader of cluster {prefix} with fencing token {token}",
                      prefix=self.keys.cluster, token=token)
        self.onLeader(token)

    def _stepDown(self) -> None:
        if self.token is None:
            return
        self.token = None
        if self._leading is not None and self._leading.active():
            self._leading.cancel()
        self._leading = None
        self.onLeader(None)
