"""
A local copy of every key under an etcd prefix, kept by a streaming watch.

L{PrefixMirror} reads the prefix (a range), then watches it from the next
revision.  When the watch's connection ends (a member died, etcd restarted)
it watches again from the revision after the last one it saw, at the next
endpoint that answers; when etcd has compacted that revision away, it reads
the prefix again and watches from there.  Nothing is missed and nothing is
applied twice.

A watch stream can also fall silent without ending: its member cut off
by a partition sends nothing, not even the error that tells a watcher it
lost its quorum.  So a watch that has been quiet for C{check} seconds is
checked: its member must answer a read within the client's timeout, as
a member with a leader does, or the watch moves to another member.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from srp.etcd.client import EtcdClient, EtcdError, Event, KeyValue, encode, prefixEnd

#: The largest watch answer line accepted (etcd's own request limit is 1.5 MiB;
#: a watch answer may batch many events).
MAX_LINE = 64 * 1024 * 1024


#: Asks the member to end the watch when it loses its raft leader (it is
#: cut off from the quorum): the watch then moves to another member instead
#: of waiting silently for events that cannot come.
REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}


class _Lines(Protocol):
    """A streamed response body, one newline-terminated JSON answer at a time."""

    def __init__(self, onLine: Callable[[bytes], None], done: Deferred[None]) -> None:
        self.onLine = onLine
        self.done = done
        #: The start of a line not yet ended, in the pieces it came in (a
        #: large answer comes in many: joined once, not at every piece).
        self.pieces: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        end = data.find(b"\n")
        while end >= 0:
            line = b"".join([*self.pieces, data[:end]])
            self.pieces, self.size, data = [], 0, data[end + 1:]
            if line.strip():
                self.onLine(line)
            end = data.find(b"\n")
        if data:
            self.pieces.append(data)
            self.size += len(data)
        if self.size > MAX_LINE:
            self.abort()

    def abort(self) -> None:
        """Stop reading: the connection closes and L{done} fires."""
        self.pieces, self.size = [], 0
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)


class PrefixMirror:
    """
    Every key under C{prefix}: C{onSnapshot} gets them all after each read
    (at the start, and after a compaction), C{onEvents} each change after
    that, C{onState} whether a watch is running, C{onError} why etcd
    refused or could not be reached each time a read or watch fails so
    (it is tried again after C{retry} seconds).
    """

    log = Logger()

    def __init__(self, client: EtcdClient, prefix: bytes,
                 onSnapshot: Callable[[Sequence[KeyValue]], None],
                 onEvents: Callable[[Sequence[Event]], None],
                 onState: Callable[[bool], None] = lambda watching: None,
                 retry: float = 0.25, check: float = 1.0,
                 onError: Callable[[str], None] = lambda error: None) -> None:
        self.client = client
        self.prefix = prefix
        self.onSnapshot = onSnapshot
        self.onEvents = onEvents
        self.onState = onState
        self.onError = onError
        self.retry = retry
        self.check = check
        #: The last revision applied: a new watch starts after it.
        self.revision = 0
        self.watching = False
        #: How many times the prefix was read (1 + compactions and failed reads).
        self.snapshots = 0
        #: How many watches a member ended with an error (it lost its quorum).
        self.errors = 0
        #: How many quiet watches were moved because their member did not answer.
        self.silent = 0
        #: The endpoint (its index) the running watch streams from, and when
        #: it last sent anything (reactor seconds).
        self.endpoint: int | None = None
        self.heard = 0.0
        self._running = False
        self._needSnapshot = True
        self._pending: IDelayedCall | None = None
        self._body: _Lines | None = None
        self._request: Deferred[Any] | None = None
        self._probe: IDelayedCall | None = None
        #: The events of an answer etcd split in fragments, until its last.
        self._fragments: list[Event] = []

    def start(self) -> None:
        """Read the prefix and start watching it."""
        self._running = True
        self._next()

    def stop(self) -> None:
        """Stop watching (the copy stays as it is)."""
        self._running = False
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._quiet()
        if self._request is not None:
            self._request.cancel()
        if self._body is not None:
            self._body.abort()

    def _next(self, delay: float = 0.0) -> None:
        if not self._running:
            return
        step = self._read if self._needSnapshot else self._watch
        self._pending = self.client.reactor.callLater(delay, step)

    def _read(self) -> None:
        self._pending = None
        self._request = self.client.rangeAll(self.prefix)

        def read(result: tuple[int, list[KeyValue]]) -> None:
            self._request = None
            self.revision, kvs = result
            self._needSnapshot = False
            self.snapshots += 1
            self.onSnapshot(kvs)
            self._next()

        self._request.addCallbacks(read, self._failed)

    def _watch(self) -> None:
        self._pending = None
        self._request = self.client.post("/v3/watch", {"create_request": {
            "key": encode(self.prefix), "range_end": encode(prefixEnd(self.prefix)),
            "start_revision": self.revision + 1, "fragment": True}}, stream=True,
            headers=REQUIRE_LEADER)

        def connected(response: Any) -> Deferred[None]:
            self._request = None
            self._fragments = []
            done: Deferred[None] = Deferred()
            self._body = _Lines(self._line, done)
            self.endpoint = self.client.current
            self.heard = self.client.reactor.seconds()
            self._listen()
            response.deliverBody(self._body)
            return done

        def ended(result: object) -> None:
            self._body = None
            self._quiet()
            self._state(False)
            if self._running:
                self._next(0 if self._needSnapshot else self.retry)

        self._request.addCallback(connected)
        self._request.addCallbacks(ended, self._failed)

    def _listen(self) -> None:
        """Check the watch when it has been quiet for C{check} seconds."""
        self._quiet()
        quiet = self.client.reactor.seconds() - self.heard
        self._probe = self.client.reactor.callLater(max(0.0, self.check - quiet), self._ask)

    def _quiet(self) -> None:
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None

    def _ask(self) -> None:
        self._probe = None
        if self._body is None or self.endpoint is None:
            return
        if self.client.reactor.seconds() - self.heard < self.check:
            self._listen()
            return
        body, endpoint = self._body, self.endpoint
        asked = self.client.post("/v3/kv/range", {"key": encode(self.prefix), "limit": 1,
                                                   "keys_only": True},
                                 headers=REQUIRE_LEADER, only=endpoint)

        def answered(result: object) -> None:
            if body is self._body:
                self.heard = self.client.reactor.seconds()
                self._listen()

        def unanswered(failure: Failure) -> None:
            if body is not self._body:
                return
            self.silent += 1
            self.log.warn("etcd watch at {endpoint} is silent and its member does not "
                          "answer ({error}): watching elsewhere",
                          endpoint=self.client.endpoints[endpoint],
                          error=failure.getErrorMessage())
            if self.client.current == endpoint:
                self.client.skipCurrent()
            body.abort()

        asked.addCallbacks(answered, unanswered)

    def _failed(self, failure: Failure) -> None:
        self._request = None
        self._state(False)
        if not self._running:
            return
        if failure.check(EtcdError):
            self.onError(failure.getErrorMessage())
        else:
            self.log.failure("etcd watch of {prefix!r} failed", failure, prefix=self.prefix)
        self._next(self.retry)

    def _line(self, line: bytes) -> None:
        self.heard = self.client.reactor.seconds()
        try:
            answer = json.loads(line)
            result = answer.get("result")
        except (ValueError, AttributeError):
            answer = result = None
        if isinstance(answer, dict) and "error" in answer:
            # This member cannot serve the watch (it has no leader): another may.
            self.errors += 1
            self.client.skipCurrent()
            assert self._body is not None
            self._body.abort()
            return
        if not isinstance(result, dict):
            self.log.warn("etcd watch: an answer that is not a watch result: {line!r}",
                          line=line[:200])
            return
        if int(result.get("compact_revision", 0)):
            # The revision to resume from is gone: read everything again.
            self._needSnapshot = True
            assert self._body is not None
            self._body.abort()
            return
        if result.get("canceled"):
            if "Unauthenticated" in str(result.get("cancel_reason")):
                self.client.token = None  # ask for a new one before watching again
            assert self._body is not None
            self._body.abort()
            return
        if result.get("created"):
            self._state(True)
        self._fragments += [Event(KeyValue.fromJSON(e.get("kv", {})), e.get("type") == "DELETE")
                            for e in result.get("events", ())]
        if result.get("fragment"):
            return  # the rest of this revision's events follow
        events, self._fragments = self._fragments, []
        if events:
            self.revision = max(self.revision, *(e.kv.modRevision for e in events))
            self.onEvents(events)

    def _state(self, watching: bool) -> None:
        if not self._running:
            self.watching = False  # stopped: nothing to report
        elif watching != self.watching:
            self.watching = watching
            self.onState(watching)
