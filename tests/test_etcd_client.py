"""The etcd JSON-gateway client and the prefix mirror, against a real single-member etcd."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from srp.etcd.client import (
    Compare,
    EtcdClient,
    EtcdError,
    Event,
    KeyValue,
    Unreachable,
    encode,
    prefixEnd,
    putOp,
    rangeOp,
)
from srp.etcd.watch import PrefixMirror, _Lines
from srp.testing.etcd import EtcdCluster, freePort, post


def waitFor(predicate: Callable[[], bool], timeout: float = 5.0) -> Deferred[None]:
    """Fire when C{predicate()} holds (polling every 10 ms); fail after C{timeout}."""
    deadline = reactor.seconds() + timeout

    @inlineCallbacks
    def poll() -> Any:
        while not predicate():
            if reactor.seconds() > deadline:
                raise AssertionError(f"not true within {timeout} s")
            yield deferLater(reactor, 0.01)

    result: Deferred[None] = poll()
    return result


class RealEtcdTestCase(TestCase):
    """Tests against one real etcd member of their own, each with a client and a prefix."""

    etcd: EtcdCluster

    @classmethod
    def setUpClass(cls) -> None:
        cls.etcd = EtcdCluster(size=1).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.etcd.stop()

    def setUp(self) -> None:
        self.client = EtcdClient(reactor, self.etcd.endpoints)
        self.addCleanup(self.client.close)
        self.prefix = f"/t/{self.id()}/".encode()


class ClientTests(RealEtcdTestCase):
    """Range, put, delete, txn and leases through the JSON gateway."""

    def test_prefixEnd(self) -> None:
        """The range end of a prefix is the prefix with its last byte below 0xFF incremented."""
        self.assertEqual(prefixEnd(b"/a/"), b"/a0")
        self.assertEqual(prefixEnd(b"a\xff"), b"b")
        self.assertEqual(prefixEnd(b"\xff"), b"\0")

    @inlineCallbacks
    def test_putRangeDelete(self) -> Any:
        """Keys put under a prefix are read back by a prefix range and deleted with it."""
        first = yield self.client.put(self.prefix + b"a", b"\x00one")
        second = yield self.client.put(self.prefix + b"b", b"two")
        yield self.client.put(self.prefix[:-1] + b"0", b"outside")
        self.assertEqual(second, first + 1)
        revision, kvs = yield self.client.range(self.prefix, prefix=True)
        self.assertEqual(revision, second + 1)
        self.assertEqual([(kv.key, kv.value) for kv in kvs],
                         [(self.prefix + b"a", b"\x00one"), (self.prefix + b"b", b"two")])
        self.assertEqual(kvs[0].createRevision, first)
        deleted = yield self.client.delete(self.prefix, prefix=True)
        self.assertEqual(deleted, 2)
        _, kvs = yield self.client.range(self.prefix, prefix=True)
        self.assertEqual(kvs, [])

    @inlineCallbacks
    def test_rangeAllInPages(self) -> Any:
        """rangeAll reads every key of a prefix page by page, each page at the first's revision."""
        for n in range(5):
            revision = yield self.client.put(self.prefix + b"%d" % n, b"v%d" % n)
        asked: list[dict[str, Any]] = []
        post = self.client.post

        def recorded(path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
            asked.append(dict(body))
            return post(path, body, *args, **kwargs)

        self.client.post = recorded  # type: ignore[method-assign]
        read, kvs = yield self.client.rangeAll(self.prefix, page=2)
        self.assertEqual(read, revision)
        self.assertEqual([kv.value for kv in kvs], [b"v%d" % n for n in range(5)])
        self.assertEqual([(body["limit"], body.get("revision")) for body in asked],
                         [(2, None), (2, revision), (2, revision)])
        self.assertEqual(asked[1]["key"], encode(self.prefix + b"1\0"))

    @inlineCallbacks
    def test_txnCreateOnce(self) -> Any:
        """A txn comparing create_revision with 0 creates a key once; the loser reads it."""
        key = self.prefix + b"leader"
        won = yield self.client.txn([Compare(key, 0)], [putOp(key, b"A")], [rangeOp(key)])
        lost = yield self.client.txn([Compare(key, 0)], [putOp(key, b"B")], [rangeOp(key)])
        self.assertTrue(won.succeeded)
        self.assertFalse(lost.succeeded)
        holder = lost.ranged()
        self.assertEqual([(kv.value, kv.createRevision) for kv in holder],
                         [(b"A", won.revision)])

    @inlineCallbacks
    def test_leases(self) -> Any:
        """Keys on a lease live while it is kept alive and go when it is revoked."""
        lease, ttl = yield self.client.grant(5)
        self.assertEqual(ttl, 5)
        yield self.client.put(self.prefix + b"k", b"v", lease=lease)
        renewed = yield self.client.keepAlive(lease)
        self.assertEqual(renewed, 5)
        _, kvs = yield self.client.range(self.prefix + b"k")
        self.assertEqual(kvs[0].lease, lease)
        yield self.client.revoke(lease)
        _, kvs = yield self.client.range(self.prefix + b"k")
        self.assertEqual(kvs, [])
        gone = yield self.client.keepAlive(lease)
        self.assertEqual(gone, 0)
        yield self.client.revoke(lease)  # revoking twice is no error

    @inlineCallbacks
    def test_leaseExpires(self) -> Any:
        """A lease not kept alive expires after its TTL, and its keys with it."""
        lease, _ = yield self.client.grant(1)
        yield self.client.put(self.prefix + b"k", b"v", lease=lease)
        yield deferLater(reactor, 2.5)
        _, kvs = yield self.client.range(self.prefix + b"k")
        self.assertEqual(kvs, [])

    @inlineCallbacks
    def test_nextEndpoint(self) -> Any:
        """A dead endpoint is skipped: the request goes to the next, which stays current."""
        dead = f"http://127.0.0.1:{freePort()}"
        client = EtcdClient(reactor, [dead, *self.etcd.endpoints])
        self.addCleanup(client.close)
        yield client.put(self.prefix + b"k", b"v")
        self.assertEqual(client.current, 1)

    @inlineCallbacks
    def test_unreachable(self) -> Any:
        """With no endpoint answering, a request fails with Unreachable naming them."""
        dead = f"http://127.0.0.1:{freePort()}"
        client = EtcdClient(reactor, [dead])
        self.addCleanup(client.close)
        with self.assertRaises(Unreachable) as caught:
            yield client.range(b"k")
        self.assertIn(dead, str(caught.exception))


class MirrorTests(RealEtcdTestCase):
    """The prefix mirror: snapshot, events, resume after a reconnect, compaction."""

    def setUp(self) -> None:
        super().setUp()
        self.copy: dict[bytes, bytes] = {}
        self.applied: list[Event] = []
        self.mirror = PrefixMirror(self.client, self.prefix, self._snapshot, self._events,
                                   retry=1.0)
        self.addCleanup(self.mirror.stop)

    def _snapshot(self, kvs: Any) -> None:
        self.copy = {kv.key: kv.value for kv in kvs}

    def _events(self, events: Any) -> None:
        self.applied.extend(events)
        for event in events:
            if event.deleted:
                self.copy.pop(event.kv.key, None)
            else:
                self.copy[event.kv.key] = event.kv.value

    @inlineCallbacks
    def test_snapshotThenEvents(self) -> Any:
        """What was there is read; puts and deletes after that arrive as events."""
        yield self.client.put(self.prefix + b"a", b"1")
        self.mirror.start()
        yield waitFor(lambda: self.mirror.watching)
        self.assertEqual(self.copy, {self.prefix + b"a": b"1"})
        yield self.client.put(self.prefix + b"b", b"2")
        yield self.client.delete(self.prefix + b"a")
        yield waitFor(lambda: len(self.applied) == 2)
        self.assertEqual(self.copy, {self.prefix + b"b": b"2"})
        self.assertEqual([e.deleted for e in self.applied], [False, True])

    @inlineCallbacks
    def _watchedThenCut(self) -> Any:
        """Start the mirror, see one event (a=1), then end its watch's connection."""
        self.mirror.start()
        yield waitFor(lambda: self.mirror.watching)
        yield self.client.put(self.prefix + b"a", b"1")
        yield waitFor(lambda: len(self.applied) == 1)
        assert self.mirror._body is not None
        self.mirror._body.abort()
        yield waitFor(lambda: not self.mirror.watching)

    @inlineCallbacks
    def test_resumeAfterReconnect(self) -> Any:
        """Changes made while the watch was down arrive once, from the last revision seen."""
        yield self._watchedThenCut()
        yield self.client.put(self.prefix + b"b", b"2")
        yield self.client.put(self.prefix + b"a", b"3")
        yield waitFor(lambda: len(self.applied) == 3)
        yield waitFor(lambda: self.mirror.watching)
        self.assertEqual([e.kv.value for e in self.applied], [b"1", b"2", b"3"])
        self.assertEqual(self.copy, {self.prefix + b"a": b"3", self.prefix + b"b": b"2"})
        self.assertEqual(self.mirror.snapshots, 1)

    @inlineCallbacks
    def test_compaction(self) -> Any:
        """When the revision to resume from was compacted, the prefix is read again."""
        yield self._watchedThenCut()
        yield self.client.delete(self.prefix + b"a")
        revision = yield self.client.put(self.prefix + b"b", b"2")
        yield self.client.put(b"/elsewhere", b"x")
        yield self.client.post("/v3/kv/compaction", {"revision": revision + 1})
        yield waitFor(lambda: self.mirror.snapshots == 2 and self.mirror.watching)
        self.assertEqual(self.copy, {self.prefix + b"b": b"2"})
        self.assertEqual(len(self.applied), 1)


def test_fragmentsAppliedWhole() -> None:
    """A watch answer etcd split in fragments reaches the copy at once, when its last part came."""
    applied: list[list[Event]] = []
    mirror = PrefixMirror(EtcdClient(Clock(), ["http://127.0.0.1:1"]), b"/p/",
                          lambda kvs: None, lambda events: applied.append(list(events)))

    def line(key: bytes, fragment: bool) -> bytes:
        return json.dumps({"result": {"fragment": fragment, "events": [
            {"kv": {"key": encode(key), "mod_revision": "7"}}]}}).encode()

    mirror._line(line(b"/p/a", True))
    assert applied == [] and mirror.revision == 0
    mirror._line(line(b"/p/b", False))
    assert [[e.kv.key for e in events] for events in applied] == [[b"/p/a", b"/p/b"]]
    assert mirror.revision == 7


def test_linesJoinedOnce() -> None:
    """A watch answer that comes in many pieces is one line; several in one piece are several."""
    lines: list[bytes] = []
    body = _Lines(lines.append, Deferred())
    for piece in (b'{"a":', b' 1', b'}\n{"b": 2}\n{"c"', b": 3}\n"):
        body.dataReceived(piece)
    assert lines == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']
    assert body.size == 0


class SilentMemberTests(TestCase):
    """A watch whose member falls silent without ending it (stopped, cut off)."""

    @inlineCallbacks
    def test_silentWatchMoves(self) -> Any:
        """
        SIGSTOP of the watched member: the quiet watch is checked, the member
        does not answer, and the watch moves on; a change made meanwhile arrives.
        """
        etcd = EtcdCluster(size=3).start()
        self.addCleanup(etcd.stop)
        client = EtcdClient(reactor, etcd.endpoints, timeout=0.5)
        self.addCleanup(client.close)
        applied: list[Event] = []
        mirror = PrefixMirror(client, b"/silent/", lambda kvs: None, applied.extend,
                              retry=0.1, check=0.2)
        self.addCleanup(mirror.stop)
        mirror.start()
        yield waitFor(lambda: mirror.watching)
        watched = mirror.endpoint
        assert watched is not None
        process = etcd.members[watched].process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, process.pid, signal.SIGCONT)
        writer = EtcdClient(reactor, [e for n, e in enumerate(etcd.endpoints) if n != watched])
        self.addCleanup(writer.close)
        while True:  # the stopped member may have been the raft leader: one election
            try:
                yield writer.put(b"/silent/a", b"1")
                break
            except EtcdError:
                yield deferLater(reactor, 0.1)
        yield waitFor(lambda: bool(applied), 5)
        self.assertEqual([e.kv.value for e in applied], [b"1"])
        self.assertEqual(mirror.silent, 1)
        self.assertNotEqual(mirror.endpoint, watched)


def test_keyValueFromJSON() -> None:
    """The gateway's base64 and string integers are read into bytes and ints."""
    kv = KeyValue.fromJSON({"key": "YQ==", "value": "Yg==", "create_revision": "7",
                            "mod_revision": "9", "lease": "12"})
    assert kv == KeyValue(b"a", b"b", 7, 9, 12)
    assert KeyValue.fromJSON({"key": "YQ==", "mod_revision": "3"}) == KeyValue(b"a", b"", 0, 3)


class AuthenticationTests(RealEtcdTestCase):
    """With etcd's authentication on, the client asks for a token, and again when it is lost."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        url = cls.etcd.endpoints[0]
        post(url, "/v3/auth/role/add", {"name": "root"})
        post(url, "/v3/auth/user/add", {"name": "root", "password": "secret"})
        post(url, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        post(url, "/v3/auth/enable", {})

    def setUp(self) -> None:
        super().setUp()
        self.client.user, self.client.password = "root", "secret"

    @inlineCallbacks
    def test_token(self) -> Any:
        """Requests carry a token; one etcd no longer takes is replaced."""
        yield self.client.put(self.prefix + b"k", b"v")
        self.assertIsNotNone(self.client.token)
        self.client.token = "not-a-token"
        _, kvs = yield self.client.range(self.prefix + b"k")
        self.assertEqual([kv.value for kv in kvs], [b"v"])

    @inlineCallbacks
    def test_watchWithAToken(self) -> Any:
        """A watch whose token etcd refuses asks for a new one and watches again."""
        copy: list[bytes] = []
        mirror = PrefixMirror(self.client, self.prefix, lambda kvs: None,
                              lambda events: copy.extend(e.kv.value for e in events))
        self.addCleanup(mirror.stop)
        mirror.start()
        yield waitFor(lambda: mirror.watching)
        self.client.token = "not-a-token"
        assert mirror._body is not None
        mirror._body.abort()  # the next watch is refused for its token
        yield waitFor(lambda: not mirror.watching)
        yield waitFor(lambda: mirror.watching)
        self.assertNotEqual(self.client.token, "not-a-token")
        yield self.client.put(self.prefix + b"k", b"v")
        yield waitFor(lambda: copy == [b"v"])

    @inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """A wrong password is etcd's error, as it said it."""
        self.client.password = "wrong"
        with self.assertRaises(EtcdError) as caught:
            yield self.client.range(b"k")
        self.assertIn("authentication failed", str(caught.exception))

